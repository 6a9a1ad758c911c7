"""Encoding, padding, sources and the cache of trainer.data."""

from __future__ import annotations

import gzip
import tarfile

import numpy as np
import pytest

from tests.helpers import TINY, write_keras_npz, write_tarball, write_tree
from trainer import data

# Frequencies in TINY: bad 5, great 5, movie 2, acting 2, boring 2, film 2, the rest 1;
# ties go to the word seen first, reading files in name order (train/neg, train/pos,
# test/neg, test/pos), like collections.Counter.most_common.
EXPECTED_TOP = ["bad", "great", "movie", "acting", "boring", "film", "it's", "a", "br"]


def test_tokenize_ranks_by_frequency_then_first_occurrence():
    texts = [b"b a, A! c", b"a<br />b", b"", b"don't d0n't"]
    ranks, splits, words = data.tokenize_and_rank(texts)
    assert words[:4] == ["a", "b", "c", "br"]
    assert set(words) == {"a", "b", "c", "br", "don't", "d0n't"}
    assert splits.tolist() == [0, 4, 7, 7, 9]
    rank = {w: i + 1 for i, w in enumerate(words)}
    assert ranks.tolist() == [
        rank[w] for w in ["b", "a", "a", "c", "a", "br", "b", "don't", "d0n't"]
    ]


@pytest.mark.parametrize(
    ("ranks", "lengths", "vocab_size", "max_review_length", "expected"),
    [
        pytest.param([1, 2], [2], 10, 4, [[0, 1, 4, 5]], id="pad-front-with-start-char"),
        pytest.param([1, 2, 3, 4, 5], [5], 100, 3, [[6, 7, 8]], id="truncate-front"),
        pytest.param([1, 7], [2], 8, 4, [[0, 1, 4, 2]], id="oov-at-num-words"),
        pytest.param([], [0], 10, 3, [[0, 0, 1]], id="empty-review"),
        pytest.param([1, 2, 3], [1, 2], 10, 3, [[0, 1, 4], [1, 5, 6]], id="two-reviews"),
    ],
)
def test_encode_matches_keras_load_data_and_pad_sequences(
    ranks, lengths, vocab_size, max_review_length, expected
):
    splits = np.append(0, np.cumsum(lengths))
    out = data.ids_from_ranks(
        np.array(ranks, dtype=np.int64), splits, vocab_size, max_review_length
    )
    assert out.dtype == np.int32
    assert out.tolist() == expected


@pytest.mark.parametrize("kind", ["tar.gz", "tar", "dir"])
def test_raw_sources_encode_the_same(tmp_path, kind):
    if kind == "dir":
        src = write_tree(tmp_path / "tree")
    else:
        src = write_tarball(tmp_path / f"tiny.{kind}", compress=kind == "tar.gz")
    ds = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "cache")
    assert list(ds.word_index)[:9] == EXPECTED_TOP
    assert ds.word_index["great"] == 2
    assert ds.x_train.shape == (4, 6) and ds.x_test.shape == (2, 6)
    assert sorted(ds.y_train.tolist()) == [0, 0, 1, 1]
    # "Great fun" -> [start, great (rank 2 + 3), fun (rank 12 + 3 >= 10: OOV)], front-padded.
    test_rows = {tuple(r) for r in ds.x_test.tolist()}
    assert (0, 0, 0, 1, 5, 2) in test_rows
    assert ds.stats["reviews"] == 6


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_pax_and_gnu_tarballs_with_long_names_read_like_ustar(tmp_path, fmt):
    # Names past ustar's 100+155 bytes need pax headers or GNU long-name entries, which the
    # fast ustar walk hands to tarfile.
    reviews = [(split, label, f"{rid:0120d}", text) for split, label, rid, text in TINY]
    tree = write_tree(tmp_path / "tree", reviews)
    src = write_tarball(tmp_path / "long.tar.gz", reviews, fmt=fmt)
    raw = gzip.decompress(src.read_bytes())
    assert (b"././@LongLink" if fmt == tarfile.GNU_FORMAT else b"path=") in raw
    ours = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "a")
    plain = data.load(str(tree), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "b")
    assert ours.word_index == plain.word_index
    np.testing.assert_array_equal(np.sort(ours.x_train, axis=0), np.sort(plain.x_train, axis=0))
    np.testing.assert_array_equal(ours.y_test, plain.y_test)


def test_cache_is_used_the_second_time(tmp_path):
    src = write_tarball(tmp_path / "tiny.tar.gz")
    first = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c")
    second = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c")
    other = data.load(str(src), vocab_size=10, max_review_length=7, cache_dir=tmp_path / "c")
    assert (first.from_cache, second.from_cache, other.from_cache) == (False, True, False)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert first.word_index == second.word_index


def test_keras_npz_source(tmp_path):
    npz = write_keras_npz(
        tmp_path / "imdb.npz",
        {
            "x_train": [[1, 2], [3, 9, 1]],
            "y_train": [1, 0],
            "x_test": [[2], [4, 4]],
            "y_test": [0, 1],
        },
        {"the": 1, "and": 2, "a": 3, "of": 4, "rare": 9},
    )
    ds = data.load(str(npz), vocab_size=8, max_review_length=4, cache_dir=tmp_path / "c")
    rows = {tuple(r) for r in ds.x_train.tolist()}
    # rank + 3, start char 1, rank 9 -> id 12 >= 8 -> OOV 2.
    assert rows == {(0, 1, 4, 5), (1, 6, 2, 4)}
    assert ds.id_to_word(8) == {4: "the", 5: "and", 6: "a", 7: "of"}


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    from tests.helpers import TINY

    reviews = [*TINY, ("train", "pos", 9, b"great \xff\xfe movie")]
    src = write_tarball(tmp_path / "bad-bytes.tar.gz", reviews)
    ds = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c")
    assert ds.stats["undecodable_reviews"] == 1
    assert len(ds.y_train) == 5


def test_sample_keeps_both_classes_of_the_real_data(shared_tarball, tmp_path):
    ds = data.load(str(shared_tarball), sample=200, cache_dir=tmp_path / "c")
    assert ds.x_train.shape == (200, 100) and ds.x_test.shape == (200, 100)
    assert 0.3 < ds.y_train.mean() < 0.7
    assert ds.stats["reviews"] == 50_000
    assert list(ds.word_index)[:10] == ["the", "and", "a", "of", "to", "is", "br", "in", "it", "i"]
    assert ds.x_train.max() <= 4999 and ds.x_train.min() == 0


@pytest.mark.parametrize("even", [False, True])
def test_pipelines_give_the_batches_of_shuffling_the_rows_themselves(even):
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.randint(0, 50, (37, 5)).astype(np.int32)
    y = rng.randint(0, 2, 37).astype(np.int32)
    ds = data.Dataset(x, y, x[:11], y[:11], {}, "s", "h")
    train, test, steps = data.make_tf_datasets(ds, 8, seed=3, eval_batch_size=4, even_batches=even)
    rows = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        37, seed=3, reshuffle_each_iteration=True
    )
    expected = (rows.repeat() if even else rows).batch(8)
    # Two passes: the second iterator (or the second pass of a repeat) is reshuffled.
    for _ in range(1 if even else 2):
        n = 2 * steps if even else None
        got_all = list(train.take(n) if n else train)
        want_all = list(expected.take(n) if n else expected)
        assert len(got_all) == len(want_all) == (n or 5)
        for got, want in zip(got_all, want_all, strict=True):
            np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
            np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    assert [b[0].shape for b in train.take(1)] == [(8, 5)]
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in test]), x[:11])
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in test]), y[:11])
