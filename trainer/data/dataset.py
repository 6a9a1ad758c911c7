"""A source -> the encoded, padded, shuffled splits (`load`), or one split's raw text."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.contract import INDEX_FROM, MAX_REVIEW_LENGTH, START_CHAR, VOCAB_SIZE
from trainer.data import cache
from trainer.data.archives import read_reviews
from trainer.data.common import DataError, default_cache_dir, sha256_file
from trainer.data.encoder import encode_stream
from trainer.data.npz import npz_reviews, read_npz
from trainer.data.sources import KERAS_WORD_INDEX_URL, download, resolve_source
from trainer.data.tokenizer import ENCODER_VERSION, ids_from_ranks

SHUFFLE_SEED = 113  # keras.datasets.imdb.load_data's default


@dataclass
class Dataset:
    """Encoded, padded IMDB splits plus the word index (word -> frequency rank, from 1)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    word_index: dict[str, int]
    source: str
    sha256: str
    stats: dict = field(default_factory=dict)
    from_cache: bool = False

    def id_to_word(self, vocab_size: int) -> dict[int, str]:
        """Map model input ids (rank + INDEX_FROM, below vocab_size) back to words."""
        return {
            rank + INDEX_FROM: word
            for word, rank in self.word_index.items()
            if rank + INDEX_FROM < vocab_size
        }


def _shuffled(n: int, rng: np.random.RandomState) -> np.ndarray:
    idx = np.arange(n)
    rng.shuffle(idx)
    return idx


def _split_orders(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The order of the train and test reviews in a Dataset (keras.datasets.imdb's)."""
    rng = np.random.RandomState(SHUFFLE_SEED)
    return _shuffled(n_train, rng), _shuffled(n_test, rng)


def encode_aclimdb(
    path: Path,
    vocab_size: int,
    max_review_length: int,
    workers: int | None = None,
    scratch: Path | None = None,
) -> tuple[dict, dict[str, int], dict]:
    """An aclImdb tarball or directory -> (arrays, word_index, stats), in a stream on every
    core the process may use (`workers` to choose); see trainer.data.encoder."""
    return encode_stream(path, vocab_size, max_review_length, _split_orders, workers, scratch)


def encode_keras_npz(
    path: Path, vocab_size: int, max_review_length: int
) -> tuple[dict, dict[str, int], dict]:
    """Keras `imdb.npz` (lists of 1-based ranks) -> the same encoding as load_data."""
    raw = read_npz(path)
    rng = np.random.RandomState(SHUFFLE_SEED)
    arrays = {}
    for split in ("train", "test"):
        reviews = npz_reviews(raw, path, split)
        ys = raw[f"y_{split}"].astype(np.int32)
        idx = _shuffled(len(reviews), rng)
        seqs, ys = [reviews[i] for i in idx], ys[idx]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        arrays[f"x_{split}"] = ids_from_ranks(
            flat, np.append(0, np.cumsum(lengths)), vocab_size, max_review_length
        )
        arrays[f"y_{split}"] = ys
    index_path = path.with_name("imdb_word_index.json")
    if (
        not index_path.exists()
        and path.resolve() == (default_cache_dir() / "downloads" / "imdb.npz").resolve()
    ):
        download(KERAS_WORD_INDEX_URL, index_path)
    if index_path.exists():
        word_index = {str(k): int(v) for k, v in json.loads(index_path.read_text()).items()}
    else:
        word_index = {}
    stats = {
        "reviews": int(len(arrays["y_train"]) + len(arrays["y_test"])),
        "undecodable_reviews": 0,
    }
    return arrays, word_index, stats


def _check(arrays: dict, origin: str) -> None:
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if len(y) == 0:
            raise DataError(f"dataset {origin} has no {split} reviews: expected at least one")
        # Every row is padding plus the start mark: nothing to learn from or to test on.
        if not (arrays[f"x_{split}"] > START_CHAR).any():
            raise DataError(f"no words in the data {origin}: every {split} review is empty")
        classes = sorted(set(np.unique(y).tolist()))
        if classes != [0, 1]:
            raise DataError(
                f"dataset {origin} {split} split has labels {classes}: expected both 0 and 1"
            )


def load(
    source: str,
    vocab_size: int = VOCAB_SIZE,
    max_review_length: int = MAX_REVIEW_LENGTH,
    sample: int = 0,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load, encode (or read from the cache) and optionally subsample the IMDB splits.

    Args:
        source: 'keras', a path/`file://`/`gs://` URI of imdb.npz, an aclImdb tarball or dir.
        vocab_size: vocabulary size (ids >= vocab_size become OOV).
        max_review_length: padded review length.
        sample: if > 0, keep the first `sample` (shuffled) reviews of each split.
        cache_dir: where downloads and encoded arrays are cached.

    Raises:
        DataError: the source is missing, corrupt, or not a usable two-class dataset.
    """
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    local = resolve_source(source, cache_root)
    if local.is_dir():
        digest = hashlib.sha256()
        for p in sorted(local.rglob("*.txt")):
            st = p.stat()
            digest.update(f"{p.relative_to(local)}:{st.st_size}:{st.st_mtime_ns};".encode())
        source_sha = digest.hexdigest()
    else:
        source_sha = sha256_file(local)
    key = hashlib.sha256(
        f"v{ENCODER_VERSION}:{source_sha}:{vocab_size}:{max_review_length}:{INDEX_FROM}".encode()
    ).hexdigest()[:24]
    cached = cache_root / "encoded" / f"{key}.npz"
    entry = cache.read(cached)
    from_cache = entry is not None
    if entry is not None:
        arrays, word_index, stats = entry
    else:
        t0 = time.perf_counter()
        with open(local, "rb") if local.is_file() else contextlib.nullcontext() as f:
            is_npz = f is not None and f.read(4) == b"PK\x03\x04"
        if is_npz:
            arrays, word_index, stats = encode_keras_npz(local, vocab_size, max_review_length)
        else:
            arrays, word_index, stats = encode_aclimdb(
                local, vocab_size, max_review_length, scratch=cache_root / "encoded"
            )
        stats["encode_seconds"] = round(time.perf_counter() - t0, 3)
        _check(arrays, source)
        cache.write(cached, arrays, word_index, stats)
    if sample:
        arrays = {k: v[:sample] for k, v in arrays.items()}
    _check(arrays, source)
    return Dataset(
        **arrays,
        word_index=word_index,
        source=source,
        sha256=source_sha,
        stats=stats,
        from_cache=from_cache,
    )


def raw_split(
    source: str, split: str = "test", cache_dir: str | Path | None = None
) -> tuple[list[bytes], np.ndarray]:
    """The raw reviews and labels of one split of an aclImdb source, in Dataset order.

    Row i is the review that `load(source).x_<split>[i]` encodes, so the first N rows are
    what a `sample=N` run trained or tested on.

    Raises:
        DataError: the source is missing, not raw text (an npz), or has no such split.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: expected train or test")
    local = resolve_source(source, Path(cache_dir) if cache_dir else default_cache_dir())
    if local.is_file() and local.read_bytes()[:4] == b"PK\x03\x04":
        raise DataError(f"{source} is an npz of word ids: expected raw aclImdb reviews")
    splits = read_reviews(local)
    orders = dict(
        zip(
            ("train", "test"), _split_orders(len(splits["train"]), len(splits["test"])), strict=True
        )
    )
    rows = [splits[split][i] for i in orders[split]]
    return [r[1] for r in rows], np.asarray([r[2] for r in rows], dtype=np.int32)
