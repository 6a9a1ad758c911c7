"""The one tokeniser of the project and the id encoding, as `keras.datasets.imdb` has them.

Words: ASCII lower-case, then every byte outside [a-z0-9'] separates words (so `<br />`
becomes the word `br`). Training (`tokenize_and_rank`), prediction (`ids_from_texts`) and
the serving SavedModel's in-graph copy (trainer/serving.py, from `NON_WORD_PATTERN`) all
read this definition. Ids: rank + INDEX_FROM, 1 = start of review, 2 = out of vocabulary,
0 = padding; padded and truncated at the front (`pad_sequences`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from trainer.contract import INDEX_FROM, OOV_CHAR, PAD_ID, START_CHAR

ENCODER_VERSION = 2  # bump when the encoding changes: invalidates caches

# The bytes words are made of, after ASCII lower-casing; any other byte separates words.
WORD_CLASS = "[a-z0-9']"
# The same definition for regular-expression engines (RE2 in the serving graph).
NON_WORD_PATTERN = f"[^{WORD_CLASS[1:-1]}]+"
_KEEP = {c for c in range(128) if re.fullmatch(WORD_CLASS, chr(c))}
_SEP = 0x00  # joins reviews; becomes the marker token "#" (never a word after translation)
_TABLE = bytes(c if c in _KEEP else (ord("#") if c == _SEP else ord(" ")) for c in range(256))


def marked_tokens(texts: Sequence[bytes]) -> list[bytes]:
    """The words of all texts in order, each text preceded by the marker token b"#".

    ASCII lower-case, then every byte outside WORD_CLASS separates words. Bytes >= 0x80
    are never word characters, so replacing undecodable bytes by U+FFFD cannot change the
    words.
    """
    # NUL joins the texts, so one inside a text is turned into a space (also a separator).
    texts = [t.replace(b"\0", b" ") if b"\0" in t else t for t in texts]
    # One pass over one buffer: join with a separator that translation turns into the
    # marker token "#", which no real word can be; markers give the text boundaries.
    return (b"\0 " + b" \0 ".join(texts)).lower().translate(_TABLE).split()


def row_splits_of(is_marker: np.ndarray) -> np.ndarray:
    """Row splits of the non-marker tokens, from the marker positions."""
    starts = np.flatnonzero(is_marker)
    return np.append(starts - np.arange(len(starts)), len(is_marker) - len(starts))


def tokenize_and_rank(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tokenise all texts at once.

    Returns:
        (ranks, row_splits, words): ranks[row_splits[i]:row_splits[i+1]] are the 1-based
        frequency ranks of review i's words; words[r - 1] is the word of rank r.
    """
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


def ids_from_texts(
    texts: Iterable[str | bytes],
    word_index: Mapping[str, int],
    vocab_size: int,
    max_review_length: int,
    index_from: int = INDEX_FROM,
) -> np.ndarray:
    """Raw reviews -> the model's input, exactly as the trainer encoded its data.

    The same tokeniser (`marked_tokens`) and the same `encode` as the training data;
    only the ranks come from a run's `word_index` instead of being counted. Words not in
    the index are out of vocabulary, like words ranked beyond `vocab_size`.

    Args:
        texts: reviews, as str (encoded to UTF-8) or UTF-8 bytes.
        word_index: word -> 1-based frequency rank (a run's `word_index.json`).
        vocab_size: ids >= vocab_size become OOV_CHAR.
        max_review_length: output width (pad and truncate at the front).
        index_from: id of rank 1 minus 1 (3: ids 0-2 are pad, start, OOV).

    Returns:
        int32 array (len(texts), max_review_length).
    """
    raw = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
    if not raw:
        return np.zeros((0, max_review_length), dtype=np.int32)
    tokens = marked_tokens(raw)
    is_marker = np.fromiter((t == b"#" for t in tokens), dtype=bool, count=len(tokens))
    # Any rank whose id reaches vocab_size is OOV; unknown words get the first such rank.
    unknown = max(vocab_size - index_from, 1)
    lookup = {w.encode(): r for w, r in word_index.items()}
    ranks = np.fromiter((lookup.get(t, unknown) for t in tokens), dtype=np.int64, count=len(tokens))
    return ids_from_ranks(
        ranks[~is_marker], row_splits_of(is_marker), vocab_size, max_review_length, index_from
    )


def encoding_doc() -> dict:
    """The encoding parameters a run records beside its config (read back by predict)."""
    return {
        "version": ENCODER_VERSION,
        "index_from": INDEX_FROM,
        "start": START_CHAR,
        "oov": OOV_CHAR,
        "pad": PAD_ID,
        "words": f"runs of {WORD_CLASS} in the ASCII-lower-cased UTF-8 bytes",
        "padding": "pre",
        "truncating": "pre",
    }


def ids_from_ranks(
    ranks: np.ndarray,
    row_splits: np.ndarray,
    vocab_size: int,
    max_review_length: int,
    index_from: int = INDEX_FROM,
) -> np.ndarray:
    """Ranks -> Keras ids + `pad_sequences` (pre-padding, pre-truncation), vectorised.

    Args:
        ranks: flat 1-based word ranks of all reviews.
        row_splits: review i is ranks[row_splits[i]:row_splits[i+1]].
        vocab_size: ids >= vocab_size become OOV_CHAR.
        max_review_length: output width.

    Returns:
        int32 array (n_reviews, max_review_length).
    """
    # Ranks at or beyond the vocabulary are OOV whatever their size: clipped before the
    # cast and the shift, a uint64 or int64 rank near the top cannot wrap to a real id.
    ceiling = max(vocab_size - index_from, 0)
    ids = np.minimum(ranks, ceiling).astype(np.int64) + index_from
    ids[ids >= vocab_size] = OOV_CHAR
    return pad_rows(ids, row_splits, max_review_length, START_CHAR, OOV_CHAR)


def pad_rows(
    values: np.ndarray, row_splits: np.ndarray, width: int, start: int, empty: int = 0
) -> np.ndarray:
    """Rows [start, *values[row]] padded with 0 and truncated at the front, to `width`.

    `empty` only keeps the gather valid when there are no values at all.
    """
    n = len(row_splits) - 1
    starts = row_splits[:-1]
    lengths = np.diff(row_splits) + 1  # + start char
    take = np.minimum(lengths, width)
    out = np.zeros((n, width), dtype=np.int32)
    row = np.repeat(np.arange(n), take)
    pos = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    col = np.repeat(width - take, take) + pos
    # Position j of review i's sequence [start, w0, w1, ...] kept from the end.
    seq_pos = np.repeat(lengths - take, take) + pos
    src = np.repeat(starts, take) + seq_pos - 1
    safe = np.append(values, empty)  # keeps the gather valid when every review is empty
    vals = np.where(seq_pos == 0, start, safe[np.clip(src, 0, len(safe) - 1)])
    out[row, col] = vals
    return out


def tokenize_chunk(
    texts: Sequence[bytes], width: int, flat: bool = False
) -> tuple[list[bytes], np.ndarray, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """One chunk of reviews, tokenised against a vocabulary of its own (a worker's job).

    Local ids number the chunk's words in order of first occurrence, from 0. Returns
    (words, counts, rows): counts[k] is how often words[k] occurs; rows are the reviews
    padded and truncated to `width` as in `pad_rows`, with 0 = padding, 1 = start and
    k + 2 = words[k]. With `flat`, rows are instead (ids, row_splits): every local id of
    every review, for the caller that needs each word's first position.
    """
    tokens = marked_tokens(texts)
    first_seen = dict.fromkeys(tokens)  # the marker b"#" first: the buffer starts with it
    index = {w: i for i, w in enumerate(first_seen)}
    ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    del tokens, index
    is_marker = ids == 0
    splits = row_splits_of(is_marker)
    counts = np.bincount(ids, minlength=len(first_seen))[1:]
    words = list(first_seen)[1:]
    ids = ids[~is_marker]
    if flat:
        return words, counts, (ids - 1, splits)
    return words, counts, pad_rows(ids + 1, splits, width, 1)
