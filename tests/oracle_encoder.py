"""A frozen copy of the whole-corpus encoding the stream (trainer.data.encoder) replaced.

The oracle of the parity tests, and the mutant that puts the whole-corpus code back
(scripts/mutants.py, `data-encode-whole-corpus`): every review and every token of the
corpus in memory at once. Copied from the trainer before the stream (dataset.encode_aclimdb,
tokenizer.tokenize_and_rank and ids_from_ranks); do not "fix" it: it is what "today's
arrays" means. Reading the archive uses the trainer's read_reviews (all reviews in memory,
sorted by name, as the old reader returned them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.contract import INDEX_FROM, OOV_CHAR, START_CHAR
from trainer.data.archives import read_reviews
from trainer.data.tokenizer import marked_tokens, row_splits_of


def _split_orders(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(113)
    out = []
    for n in (n_train, n_test):
        idx = np.arange(n)
        rng.shuffle(idx)
        out.append(idx)
    return out[0], out[1]


def tokenize_and_rank(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tokens = marked_tokens(texts)
    first_seen = dict.fromkeys(tokens)
    index = {w: i for i, w in enumerate(first_seen)}
    ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    del tokens
    marker = index[b"#"]
    is_marker = ids == marker
    counts = np.bincount(ids, minlength=len(index))
    counts[marker] = -1  # never ranked
    order = np.argsort(-counts, kind="stable")  # ties: first occurrence, like Counter
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    words_in_order = list(first_seen)
    words = [words_in_order[i].decode() for i in order[:-1]]
    ranks = rank[ids[~is_marker]]
    return ranks, row_splits_of(is_marker), words


def ids_from_ranks(ranks, row_splits, vocab_size, max_review_length, index_from=INDEX_FROM):
    ceiling = max(vocab_size - index_from, 0)
    ids = np.minimum(ranks, ceiling).astype(np.int64) + index_from
    ids[ids >= vocab_size] = OOV_CHAR
    n = len(row_splits) - 1
    starts = row_splits[:-1]
    lengths = np.diff(row_splits) + 1  # + start char
    take = np.minimum(lengths, max_review_length)
    out = np.zeros((n, max_review_length), dtype=np.int32)
    row = np.repeat(np.arange(n), take)
    pos = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    col = np.repeat(max_review_length - take, take) + pos
    seq_pos = np.repeat(lengths - take, take) + pos
    src = np.repeat(starts, take) + seq_pos - 1
    safe = np.append(ids, OOV_CHAR)
    vals = np.where(seq_pos == 0, START_CHAR, safe[np.clip(src, 0, len(safe) - 1)])
    out[row, col] = vals
    return out


def encode_whole_corpus(
    path: Path, vocab_size: int, max_review_length: int, *_, **__
) -> tuple[dict, dict[str, int], dict]:
    """(arrays, word_index, stats) as the trainer computed them before the stream."""
    splits = read_reviews(path)
    undecodable = 0
    texts: list[bytes] = []
    labels: list[int] = []
    for split in ("train", "test"):
        for _, content, label in splits[split]:
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                undecodable += 1
                content = content.decode("utf-8", errors="replace").encode()
            texts.append(content)
            labels.append(label)
    n_train = len(splits["train"])
    del splits
    ranks, row_splits, words = tokenize_and_rank(texts)
    x = ids_from_ranks(ranks, row_splits, vocab_size, max_review_length)
    y = np.asarray(labels, dtype=np.int32)
    tr, te = _split_orders(n_train, len(y) - n_train)
    arrays = {
        "x_train": x[:n_train][tr],
        "y_train": y[:n_train][tr],
        "x_test": x[n_train:][te],
        "y_test": y[n_train:][te],
    }
    word_index = {w: i + 1 for i, w in enumerate(words)}
    stats = {
        "reviews": int(len(y)),
        "undecodable_reviews": undecodable,
        "tokens": int(len(ranks)),
        "distinct_words": len(words),
    }
    return arrays, word_index, stats
