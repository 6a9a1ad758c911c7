"""The stream encodes exactly what the whole-corpus code before it did.

Digests pinned from the trainer before the stream (its `data.load` on the corpus of
tests/corpus.py, vocab 50, width 20); the frozen copy of that code (tests/oracle_encoder.py)
gives the same arrays here, so a change to the fixture shows as a disagreement of the two,
not as a silent new pin. Chunks of a few reviews: 2 workers really merge many chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import corpus
from tests.oracle_encoder import encode_whole_corpus
from trainer import data
from trainer.data import encoder

VOCAB, WIDTH = 50, 20
PINNED = {  # corpus.digest of the arrays and word index the code before the stream made
    "raw": "30e0074afb80b3b0adde874b417f39f0e252ab4adf908aedca7dd1dd6266a7c3",
    "keras-npz": "8d7538a78eb6530238734d6b695d0bd86d6810fd8f4796b1616ea12cb6932a66",
}
PINNED_STATS = {"reviews": 400, "undecodable_reviews": 12, "tokens": 10120, "distinct_words": 446}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    reviews = corpus.reviews()
    return {
        "tarball": corpus.write_tarball(root / "dataset-order.tar.gz", reviews),
        "tarball-shuffled": corpus.write_tarball(root / "shuffled.tar.gz", reviews, "shuffled"),
        "directory": corpus.write_tree(root / "tree", reviews),
        "keras-npz": corpus.write_keras_npz(root / "imdb.npz"),
    }


def _arrays(ds) -> dict:
    return {k: getattr(ds, k) for k in ("x_train", "y_train", "x_test", "y_test")}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["tarball", "tarball-shuffled", "directory"])
def test_raw_sources_encode_to_the_arrays_of_the_whole_corpus_code(
    sources, kind, workers, monkeypatch
):
    monkeypatch.setattr(encoder, "CHUNK_BYTES", 1500)  # about 10 reviews a chunk
    arrays, word_index, stats = data.encode_aclimdb(sources[kind], VOCAB, WIDTH, workers=workers)
    assert corpus.digest(arrays, word_index) == PINNED["raw"]
    assert stats == PINNED_STATS
    for k, v in arrays.items():
        assert v.dtype == np.int32, k


def test_the_oracle_is_the_code_the_digests_were_pinned_from(sources):
    arrays, word_index, stats = encode_whole_corpus(sources["tarball"], VOCAB, WIDTH)
    assert corpus.digest(arrays, word_index) == PINNED["raw"]
    assert stats == PINNED_STATS


def test_keras_npz_encodes_to_the_arrays_of_the_code_before(sources, tmp_path):
    ds = data.load(str(sources["keras-npz"]), VOCAB, WIDTH, cache_dir=tmp_path / "c")
    assert corpus.digest(_arrays(ds), ds.word_index) == PINNED["keras-npz"]
    again = data.load(str(sources["keras-npz"]), VOCAB, WIDTH, cache_dir=tmp_path / "c")
    assert again.from_cache
    assert corpus.digest(_arrays(again), again.word_index) == PINNED["keras-npz"]


@pytest.mark.parametrize("kind", ["tarball", "directory"])
def test_a_load_and_its_cached_reload_give_the_pinned_arrays(sources, kind, tmp_path):
    first = data.load(str(sources[kind]), VOCAB, WIDTH, cache_dir=tmp_path / "c")
    second = data.load(str(sources[kind]), VOCAB, WIDTH, cache_dir=tmp_path / "c")
    assert (first.from_cache, second.from_cache) == (False, True)
    for ds in (first, second):
        assert corpus.digest(_arrays(ds), ds.word_index) == PINNED["raw"]
