"""An aclImdb tarball or directory -> the encoded splits, as a stream on every core.

Memory stays flat in the corpus size: members are read one at a time, tokenised in chunks
of about CHUNK_BYTES (on all the cores the process may use, chunk results merged in order,
so any number of workers gives the same bytes), and each review is kept only as its last
`max_review_length` word ids, in a temporary file. What the ranking needs is small: the
vocabulary, each word's count and the order in which words first occur. At the end the
provisional ids become Keras ids (rank + index_from, OOV beyond the vocabulary) and the
rows go to their place in the shuffled splits: peak memory is the output arrays plus the
vocabulary plus a constant.

Ties in frequency rank by first occurrence over train then test, each split by name (the
`read_reviews` order). A stream in that order within each split (a directory, the aclImdb
tarball) yields the first occurrences as it goes; another order costs a second pass that
finds each word's first position by the reviews' sorted places.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from trainer.contract import INDEX_FROM, OOV_CHAR, PAD_ID, START_CHAR
from trainer.data.archives import SPLITS, iter_reviews, no_reviews
from trainer.data.common import available_cpus, progress
from trainer.data.tokenizer import tokenize_chunk

CHUNK_BYTES = 1 << 22  # review text per tokenising job: large enough to amortise a job


class _Reviews:
    """What is kept of every review, in stream order: split, label and name."""

    def __init__(self) -> None:
        self.split = bytearray()  # SPLITS index
        self.label = bytearray()
        self.names: list[str] = []
        self.undecodable = 0
        self.ordered = True  # names ascend within each split, as the dataset orders them
        self._last: dict[int, str] = {}

    def add(self, split: int, name: str, label: int) -> None:
        last = self._last.get(split)
        if last is not None and name < last:
            self.ordered = False
        self._last[split] = name
        self.split.append(split)
        self.label.append(label)
        self.names.append(name)


def _chunks(path: Path, reviews: _Reviews | None) -> Iterator[tuple[int, list[bytes]]]:
    """(split, texts) chunks of about CHUNK_BYTES, one split each, in stream order.

    Records each review in `reviews` (None on a second pass: already recorded).
    """
    texts: list[bytes] = []
    size, current = 0, -1
    for split_name, name, content, label in iter_reviews(path):
        split = SPLITS.index(split_name)
        if texts and (split != current or size >= CHUNK_BYTES):
            yield current, texts
            texts, size = [], 0
        current = split
        if reviews is not None:
            reviews.add(split, name, label)
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                # Kept and counted: undecodable bytes (>= 0x80) are never word characters,
                # so decoding with replacement would not change a single word.
                reviews.undecodable += 1
        texts.append(content)
        size += len(content)
    if texts:
        yield current, texts


def _in_order(jobs: Iterator, fn: Callable, workers: int) -> Iterator:
    """(tag, fn(*args)) for (tag, args) in jobs, in order, on `workers` processes.

    At most two jobs per worker are in flight, so memory does not follow the corpus.
    Workers are spawned, never forked (the parent may hold TensorFlow's threads), and start
    without the parent's main module: a script that calls this unguarded is not re-run.
    """
    jobs = iter(jobs)
    head = list(itertools.islice(jobs, 2))
    jobs = itertools.chain(head, jobs)
    if workers <= 1 or len(head) < 2:  # one chunk: starting workers would cost more
        for tag, args in jobs:
            yield tag, fn(*args)
        return
    with _main_module_hidden():
        pool = multiprocessing.get_context("spawn").Pool(workers)  # starts them all now
    pending: collections.deque = collections.deque()
    try:
        for tag, args in jobs:
            pending.append((tag, pool.apply_async(fn, args)))
            if len(pending) >= 2 * workers:
                tag0, result = pending.popleft()
                yield tag0, result.get()
        while pending:
            tag0, result = pending.popleft()
            yield tag0, result.get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """multiprocessing's spawn re-imports the parent's main module in every child unless it
    has neither a spec nor a file: hide both while the children are started."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            del main.__spec__


class _Vocabulary:
    """Words -> provisional ids (order of first occurrence in the stream), their counts and
    their first occurrences within each split."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.counts = np.zeros(1 << 16, dtype=np.int64)
        self.seen = [np.zeros(1 << 16, dtype=bool) for _ in SPLITS]
        self.first: list[list[np.ndarray]] = [[] for _ in SPLITS]

    def ids(self, words: list[bytes]) -> np.ndarray:
        index = self.index
        new = [w for w in words if w not in index]
        if new:
            index.update(zip(new, range(len(index), len(index) + len(new)), strict=True))
            if len(index) > len(self.counts):
                grow = max(len(index), 2 * len(self.counts)) - len(self.counts)
                self.counts = np.append(self.counts, np.zeros(grow, np.int64))
                self.seen = [np.append(s, np.zeros(grow, bool)) for s in self.seen]
        return np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))

    def add(self, split: int, words: list[bytes], counts: np.ndarray) -> np.ndarray:
        g = self.ids(words)
        self.counts[g] += counts  # words of a chunk are distinct: no repeated index
        seen = self.seen[split]
        fresh = g[~seen[g]]  # local ids are in order of first occurrence: so are these
        if fresh.size:
            self.first[split].append(fresh)
            seen[fresh] = True
        return g

    def first_order(self) -> np.ndarray:
        """Provisional ids in order of first occurrence over train, then test."""
        train = np.concatenate(self.first[0]) if self.first[0] else np.zeros(0, np.int64)
        test = np.concatenate(self.first[1]) if self.first[1] else np.zeros(0, np.int64)
        return np.concatenate([train, test[~self.seen[0][test]]])


def _first_positions(path: Path, vocab: _Vocabulary, reviews: _Reviews, workers: int) -> np.ndarray:
    """Provisional ids in order of first occurrence in the dataset order, for a stream in
    another order: every word's earliest (sorted place of review, position in review)."""
    n = len(reviews.names)
    split = np.frombuffer(bytes(reviews.split), dtype=np.uint8)
    place = np.empty(n, dtype=np.int64)
    order = sorted(range(n), key=lambda i: (split[i], reviews.names[i]))
    place[order] = np.arange(n)
    best = np.full(len(vocab.index), np.iinfo(np.int64).max, dtype=np.int64)
    row = 0
    jobs = ((None, (texts, 0, True)) for _, texts in _chunks(path, None))
    for _, (words, _, (ids, splits)) in _in_order(jobs, tokenize_chunk, workers):
        g = vocab.ids(words)[ids]
        lengths = np.diff(splits)
        pos = np.arange(len(ids)) - np.repeat(splits[:-1], lengths)
        key = (np.repeat(place[row : row + len(lengths)], lengths) << 32) | pos
        np.minimum.at(best, g, key)
        row += len(lengths)
    return np.argsort(best, kind="stable")[: int((best < np.iinfo(np.int64).max).sum())]


def encode_stream(
    path: Path,
    vocab_size: int,
    max_review_length: int,
    orders: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    workers: int | None = None,
    scratch: Path | None = None,
) -> tuple[dict, dict[str, int], dict]:
    """Encode an aclImdb tarball or directory in a stream.

    Args:
        orders: (n_train, n_test) -> the shuffled order of each split's sorted reviews.
        workers: tokenising processes (default: the cores this process may use).
        scratch: a folder for the temporary file of the reviews' ids (default: the
            system's temporary folder).

    Returns:
        (arrays, word_index, stats), exactly as the whole-corpus encoding gives them.
    """
    workers = available_cpus() if workers is None else max(1, workers)
    width = max_review_length
    reviews, vocab = _Reviews(), _Vocabulary()
    tokens = 0
    rows_file = _Rows(scratch, width)
    with contextlib.closing(rows_file), progress(None, f"encode {path.name}", "review") as bar:
        jobs = ((split, (texts, width)) for split, texts in _chunks(path, reviews))
        for split, (words, counts, rows) in _in_order(jobs, tokenize_chunk, workers):
            g = vocab.add(split, words, counts)
            tokens += int(counts.sum())
            # 0 = padding, 1 = start, k + 2 = provisional id k: one table maps them later.
            rows_file.append(np.concatenate([[0, 1], g + 2]).astype(np.int32)[rows])
            bar.update(len(rows))
        n = len(reviews.names)
        split = np.frombuffer(bytes(reviews.split), dtype=np.uint8)
        n_train = int((split == 0).sum())
        missing = [s for s, k in zip(SPLITS, (n_train, n - n_train), strict=True) if not k]
        if missing:
            raise no_reviews(path, missing)
        if reviews.ordered:
            first = vocab.first_order()
        else:
            first = _first_positions(path, vocab, reviews, workers)
        # Frequency rank, ties by first occurrence (collections.Counter.most_common's).
        v = len(vocab.index)
        place = np.empty(v, dtype=np.int64)
        place[first] = np.arange(v)
        ranked = np.lexsort((place, -vocab.counts[:v]))
        rank = np.empty(v, dtype=np.int64)
        rank[ranked] = np.arange(1, v + 1)
        ids = rank + INDEX_FROM
        ids[ids >= vocab_size] = OOV_CHAR
        table = np.concatenate([[PAD_ID, START_CHAR], ids]).astype(np.int32)
        arrays = _place_rows(rows_file, table, split, reviews, n_train, width, orders)
    words_by_id = list(vocab.index)
    word_index = {words_by_id[i].decode(): r + 1 for r, i in enumerate(ranked)}
    stats = {
        "reviews": n,
        "undecodable_reviews": reviews.undecodable,
        "tokens": tokens,
        "distinct_words": v,
    }
    return arrays, word_index, stats


class _Rows:
    """The reviews' rows in stream order: a temporary file, or memory where none can be
    written (a full disk costs memory, never the run)."""

    def __init__(self, scratch: Path | None, width: int):
        self.width = width
        self._memory: list[np.ndarray] | None = None
        self._file = None
        self._written = 0  # rows in the file
        with contextlib.suppress(OSError):
            if scratch is not None:
                scratch.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=scratch, prefix=".rows-")  # noqa: SIM115
        if self._file is None:
            self._memory = []

    def append(self, rows: np.ndarray) -> None:
        if self._memory is None:
            try:
                rows.tofile(self._file)
                self._written += len(rows)
                return
            except OSError:  # the cache's own write then warns, once, about the full disk
                self._file.seek(0)
                self._memory = [self._read(self._written)]
                self._file.close()
        self._memory.append(rows)

    def _read(self, count: int) -> np.ndarray:
        return np.fromfile(self._file, np.int32, count=count * self.width).reshape(-1, self.width)

    def chunks(self, step: int) -> Iterator[np.ndarray]:
        """The rows in order, `step` at a time (or in the pieces they were kept in)."""
        if self._memory is not None:
            yield from self._memory
            return
        self._file.seek(0)
        for start in range(0, self._written, step):
            yield self._read(min(step, self._written - start))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._memory = None


def _place_rows(rows_file, table, split, reviews, n_train, width, orders) -> dict:
    """Each review's row, read back in stream order, mapped to Keras ids and written to its
    place in its shuffled split."""
    n = len(split)
    labels = np.frombuffer(bytes(reviews.label), dtype=np.uint8)
    # Stream index of each split's reviews in name order (stream order when it ascends).
    by_name = []
    for s in range(len(SPLITS)):
        idx = np.flatnonzero(split == s)
        if not reviews.ordered:
            names = reviews.names
            idx = np.asarray(sorted(idx.tolist(), key=names.__getitem__), dtype=np.int64)
        by_name.append(idx)
    shuffles = orders(n_train, n - n_train)
    dest = np.empty(n, dtype=np.int64)  # row of stream review i in its split's array
    arrays = {}
    for s, name in enumerate(SPLITS):
        taken = by_name[s][shuffles[s]]
        dest[taken] = np.arange(len(taken))
        arrays[f"x_{name}"] = np.empty((len(taken), width), dtype=np.int32)
        arrays[f"y_{name}"] = labels[taken].astype(np.int32)
    start = 0
    for chunk in rows_file.chunks(max(1, CHUNK_BYTES // (4 * width))):
        rows = table[chunk]
        s_of = split[start : start + len(rows)]
        for s, name in enumerate(SPLITS):
            mine = s_of == s
            arrays[f"x_{name}"][dest[start : start + len(rows)][mine]] = rows[mine]
        start += len(rows)
    return arrays
