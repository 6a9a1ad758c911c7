"""IMDB data: a source (Keras npz | aclImdb tarball or directory | gs://) -> padded id arrays.

The raw-text encoding reproduces `keras.datasets.imdb`: lower-case text, words are runs
of [a-z0-9'] (so `<br />` becomes the word `br`), words ranked by frequency over train
and test (ties by first occurrence), id = rank + index_from (3), 1 = start of review,
2 = out of vocabulary (rank + 3 >= num_words), 0 = padding; then `pad_sequences`
(pad and truncate at the front) to `max_review_length`.

Encoded arrays and the word index are cached on disk, keyed by the source's sha256 and
the encoding parameters, so a second run skips tokenisation. A cache entry is one file,
published by atomic rename and verified by its own sha256 on every read: a corrupt entry
is rebuilt, and a cache that cannot be written (disk full) only costs the next run time.

Untrusted input stays data: npz files are read without pickle (object arrays of integer
lists, the Keras layout, go through an unpickler that can only build arrays and lists),
and no source may expand beyond a configurable ceiling (gzip bombs).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import re
import stat
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer import contract
from trainer.contract import MAX_DATA_BYTES_DEFAULT, MAX_DATA_BYTES_ENV
from trainer.termination import RetryableError

START_CHAR = 1
OOV_CHAR = 2
INDEX_FROM = 3
SHUFFLE_SEED = 113  # keras.datasets.imdb.load_data's default
ENCODER_VERSION = 2  # bump when the encoding changes: invalidates caches

KERAS_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
KERAS_NPZ_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
KERAS_WORD_INDEX_URL = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json"
)
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")

_REVIEW_RE = re.compile(rb"(?:^|/)(train|test)/(pos|neg)/([^/]+)\.txt$")
_KEEP = set(range(ord("a"), ord("z") + 1)) | set(b"0123456789'")
_SEP = 0x00  # joins reviews; becomes the marker token "#" (never a word after translation)
_TABLE = bytes(c if c in _KEEP else (ord("#") if c == _SEP else ord(" ")) for c in range(256))


class DataError(ValueError):
    """The data source is missing, corrupt, or not usable; the message says which and why."""


def max_data_bytes() -> int:
    """The ceiling on what a data source may expand to (bytes), from the environment."""
    raw = os.environ.get(MAX_DATA_BYTES_ENV, "")
    if not raw:
        return MAX_DATA_BYTES_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"invalid {MAX_DATA_BYTES_ENV}={raw!r}: expected a positive byte count")
    return value


def _too_big(what: str, limit: int) -> DataError:
    return DataError(
        f"{what} expands beyond the ceiling of {limit} bytes ({MAX_DATA_BYTES_ENV}): a "
        f"decompression bomb or the wrong file; raise {MAX_DATA_BYTES_ENV} if it is genuine"
    )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


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


def default_cache_dir() -> Path:
    env = os.environ.get(contract.CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imdb-train"


def _progress(total=None, desc="", unit="it", **kw):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        disable=os.environ.get(contract.PROGRESS_ENV, "1") == "0",
        **kw,
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- sources


def download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest` (atomically, with progress), verifying sha256 if given."""
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with _progress(total, f"download {dest.name}", "B", unit_scale=True) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if sha256 and (got := sha256_file(Path(tmp))) != sha256:
            raise DataError(f"download of {url} has sha256 {got}: expected {sha256}")
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"cannot download {url}: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def resolve_source(source: str, cache_dir: Path) -> Path:
    """Turn 'keras', a gs:// URI or a path into a local file or directory."""
    if source == "keras":
        return download(KERAS_NPZ_URL, cache_dir / "downloads" / "imdb.npz", KERAS_NPZ_SHA256)
    if source.startswith("gs://"):
        from trainer.storage import StoreError, StoreUnavailableError, open_store

        parent, _, name = source[len("gs://") :].rstrip("/").rpartition("/")
        if not name or not parent:
            raise DataError(f"invalid data URI {source!r}: expected gs://bucket/path/to/file")
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        try:
            store = open_store("gs://" + parent)
            # Keyed by the object's generation, not only its name: an object replaced under
            # the same name is downloaded again, never read stale from the cache.
            local = cache_dir / "downloads" / key / store.version(name) / name
            if not local.exists():
                store.download_file(name, local)
            if name.endswith(".npz"):
                with contextlib.suppress(StoreError):
                    store.download_file(
                        "imdb_word_index.json", local.with_name("imdb_word_index.json")
                    )
        except StoreUnavailableError:
            raise  # an outage, not bad data: the run is resumable (exit 75)
        except StoreError as e:
            raise DataError(f"cannot read data source {source}: {e}") from e
        return local
    path = Path(source[len("file://") :] if source.startswith("file://") else source)
    if not source.strip() or not path.exists():
        raise DataError(
            f"data source {source!r} does not exist: expected 'keras', a path to imdb.npz, "
            "an aclImdb tarball or directory, or a gs:// URI"
        )
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block or never end
        raise DataError(
            f"data source {source!r} is not a regular file or a directory: expected "
            "imdb.npz, an aclImdb tarball or directory"
        )
    return path


# ----------------------------------------------------------------------------- raw text


def _read_tar_members(raw: bytes, origin: str) -> list[tuple[bytes, bytes]]:
    """(name, content) of regular files; a fast ustar walk with a tarfile fallback."""
    out: list[tuple[bytes, bytes]] = []
    off, n = 0, len(raw)
    while off + 512 <= n:
        header = raw[off : off + 512]
        if header == b"\0" * 512:
            return out
        kind = header[156:157]
        chksum = header[148:156].rstrip(b"\0 ")
        if kind not in (b"0", b"\0", b"5") or not chksum:
            return _read_tar_members_slow(raw, origin)  # pax / GNU long names: general reader
        if int(chksum, 8) != sum(header[:148]) + 256 + sum(header[156:]):
            raise DataError(f"corrupt tarball {origin}: bad header checksum at byte {off}")
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        name = header[:100].rstrip(b"\0")
        prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
        off += 512
        if off + size > n:
            member = name.decode(errors="replace")
            raise DataError(f"truncated tarball {origin}: {member} is cut off")
        if kind != b"5":
            out.append((prefix + b"/" + name if prefix else name, raw[off : off + size]))
        off += (size + 511) // 512 * 512
    # A complete archive ends with a zero block (returned above); running out of bytes
    # first means the file was cut short.
    raise DataError(f"truncated tarball {origin}: no end-of-archive marker")


def _read_tar_members_slow(raw: bytes, origin: str) -> list[tuple[bytes, bytes]]:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            return [(m.name.encode(), tf.extractfile(m).read()) for m in tf if m.isfile()]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"corrupt or truncated tarball {origin}: {e}") from e


def _gunzip(data: bytes, path: Path, limit: int) -> bytes:
    """gzip.decompress with a ceiling: stops inflating as soon as the output passes `limit`.

    zlib directly rather than GzipFile: GzipFile's chunked reads cost twice the time.
    """
    out: list[bytes] = []
    size, buf = 0, data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while True:
            chunk = inflater.decompress(buf, 1 << 24)
            size += len(chunk)
            if size > limit:
                raise _too_big(f"tarball {path}", limit)
            out.append(chunk)
            if inflater.eof:
                buf = inflater.unused_data
                if not buf.strip(b"\0"):  # gzip allows zero padding after the last member
                    break
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next member
                continue
            buf = inflater.unconsumed_tail
            if not buf and not chunk:
                raise DataError(f"corrupt or truncated tarball {path}: the gzip stream ends early")
    except zlib.error as e:
        raise DataError(f"corrupt or truncated tarball {path}: {e}") from e
    return b"".join(out)


def _read_directory(root: Path, limit: int) -> list[tuple[bytes, bytes]]:
    """(relative name, content) of the regular *.txt files under root, links not followed.

    Symlinks (to files outside the dataset, to devices, dangling), FIFOs, sockets and
    devices are skipped and counted; a file that cannot be read is refused with its name.
    The ceiling counts the bytes actually read, so nothing can read past it.
    """
    members: list[tuple[bytes, bytes]] = []
    total, skipped = 0, 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".txt"):
                continue
            full = os.path.join(dirpath, name)
            try:
                if not stat.S_ISREG(os.lstat(full).st_mode):  # never opened: links, devices
                    skipped += 1
                    continue
                # O_NOFOLLOW: a link is never opened; O_NONBLOCK: neither is a FIFO's writer
                # awaited; fstat then says what was opened.
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO/socket/device
                    skipped += 1
                    continue
                raise DataError(f"cannot read {full}: {e.strerror}") from None
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    skipped += 1
                    continue
                content = f.read(limit - total + 1)
            total += len(content)
            if total > limit:
                raise _too_big(f"directory {root}", limit)
            members.append((os.path.relpath(full, root).replace(os.sep, "/").encode(), content))
    if skipped:
        _warn(f"skipped {skipped} entries of {root} that are not regular files "
              "(symlinks, FIFOs, devices): only the dataset's own files are read")  # fmt: skip
    return members


def read_reviews(path: Path) -> dict[str, list[tuple[str, bytes, int]]]:
    """Read raw reviews from an aclImdb tarball or directory.

    Returns:
        {"train": [(name, text_bytes, label)], "test": [...]}, sorted by name.
    """
    members: list[tuple[bytes, bytes]]
    limit = max_data_bytes()
    if path.is_dir():
        members = _read_directory(path, limit)
    else:
        if path.stat().st_size > limit:
            raise _too_big(f"data source {path}", limit)
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, path, limit)
        members = _read_tar_members(data, str(path))
    splits: dict[str, list[tuple[str, bytes, int]]] = {"train": [], "test": []}
    for name, content in members:
        m = _REVIEW_RE.search(name)
        if m:
            split, label = m.group(1).decode(), int(m.group(2) == b"pos")
            splits[split].append((name.decode(errors="replace"), content, label))
    for split in splits.values():
        split.sort(key=lambda r: r[0])
    if not splits["train"] or not splits["test"]:
        missing = [s for s, v in splits.items() if not v]
        raise DataError(
            f"no {'/'.join(missing)} reviews in {path}: expected "
            "aclImdb/{train,test}/{pos,neg}/*.txt"
        )
    return splits


def _marked_tokens(texts: Sequence[bytes]) -> list[bytes]:
    """The words of all texts in order, each text preceded by the marker token b"#".

    The one tokeniser of the project (training and prediction; trainer/serving.py mirrors
    it in TensorFlow ops): ASCII lower-case, then every byte outside [a-z0-9'] separates
    words. Bytes >= 0x80 are never word characters, so replacing undecodable bytes by
    U+FFFD cannot change the words.
    """
    # NUL joins the texts, so one inside a text is turned into a space (also a separator).
    texts = [t.replace(b"\0", b" ") if b"\0" in t else t for t in texts]
    # One pass over one buffer: join with a separator that translation turns into the
    # marker token "#", which no real word can be; markers give the text boundaries.
    return (b"\0 " + b" \0 ".join(texts)).lower().translate(_TABLE).split()


def _row_splits(is_marker: np.ndarray) -> np.ndarray:
    """Row splits of the non-marker tokens, from the marker positions."""
    starts = np.flatnonzero(is_marker)
    return np.append(starts - np.arange(len(starts)), len(is_marker) - len(starts))


def tokenize_and_rank(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tokenise all texts at once.

    Returns:
        (ranks, row_splits, words): ranks[row_splits[i]:row_splits[i+1]] are the 1-based
        frequency ranks of review i's words; words[r - 1] is the word of rank r.
    """
    tokens = _marked_tokens(texts)
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
    return ranks, _row_splits(is_marker), words


def encode_texts(
    texts: Iterable[str | bytes],
    word_index: Mapping[str, int],
    vocab_size: int,
    max_review_length: int,
    index_from: int = INDEX_FROM,
) -> np.ndarray:
    """Raw reviews -> the model's input, exactly as the trainer encoded its data.

    The same tokeniser (`_marked_tokens`) and the same `encode` as the training data;
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
    tokens = _marked_tokens(raw)
    is_marker = np.fromiter((t == b"#" for t in tokens), dtype=bool, count=len(tokens))
    # Any rank whose id reaches vocab_size is OOV; unknown words get the first such rank.
    unknown = max(vocab_size - index_from, 1)
    lookup = {w.encode(): r for w, r in word_index.items()}
    ranks = np.fromiter((lookup.get(t, unknown) for t in tokens), dtype=np.int64, count=len(tokens))
    return encode(
        ranks[~is_marker], _row_splits(is_marker), vocab_size, max_review_length, index_from
    )


def encoding_doc() -> dict:
    """The encoding parameters a run records beside its config (read back by predict)."""
    return {
        "version": ENCODER_VERSION,
        "index_from": INDEX_FROM,
        "start": START_CHAR,
        "oov": OOV_CHAR,
        "pad": 0,
        "words": "runs of [a-z0-9'] in the ASCII-lower-cased UTF-8 bytes",
        "padding": "pre",
        "truncating": "pre",
    }


def encode(
    ranks: np.ndarray,
    row_splits: np.ndarray,
    num_words: int,
    maxlen: int,
    index_from: int = INDEX_FROM,
) -> np.ndarray:
    """Keras encoding + `pad_sequences(maxlen)` (pre-padding, pre-truncation), vectorised.

    Args:
        ranks: flat 1-based word ranks of all reviews.
        row_splits: review i is ranks[row_splits[i]:row_splits[i+1]].
        num_words: ids >= num_words become OOV_CHAR.
        maxlen: output width.

    Returns:
        int32 array (n_reviews, maxlen).
    """
    # Ranks at or beyond the vocabulary are OOV whatever their size: clipped before the
    # cast and the shift, a uint64 or int64 rank near the top cannot wrap to a real id.
    ceiling = max(num_words - index_from, 0)
    ids = np.minimum(ranks, ceiling).astype(np.int64) + index_from
    ids[ids >= num_words] = OOV_CHAR
    n = len(row_splits) - 1
    starts = row_splits[:-1]
    lengths = np.diff(row_splits) + 1  # + start char
    take = np.minimum(lengths, maxlen)
    out = np.zeros((n, maxlen), dtype=np.int32)
    row = np.repeat(np.arange(n), take)
    pos = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    col = np.repeat(maxlen - take, take) + pos
    # Position j of review i's sequence [1, w0, w1, ...] kept from the end.
    seq_pos = np.repeat(lengths - take, take) + pos
    src = np.repeat(starts, take) + seq_pos - 1
    safe = np.append(ids, OOV_CHAR)  # keeps the gather valid when every review is empty
    vals = np.where(seq_pos == 0, START_CHAR, safe[np.clip(src, 0, len(safe) - 1)])
    out[row, col] = vals
    return out


def _shuffled(n: int, rng: np.random.RandomState) -> np.ndarray:
    idx = np.arange(n)
    rng.shuffle(idx)
    return idx


def _split_orders(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The order of the train and test reviews in a Dataset (keras.datasets.imdb's)."""
    rng = np.random.RandomState(SHUFFLE_SEED)
    return _shuffled(n_train, rng), _shuffled(n_test, rng)


def encode_reviews(path: Path, num_words: int, maxlen: int) -> tuple[dict, dict[str, int], dict]:
    with _progress(4, f"encode {path.name}", "step") as bar:
        splits = read_reviews(path)
        bar.update()
        undecodable = 0
        texts: list[bytes] = []
        labels: list[int] = []
        for split in ("train", "test"):
            for _, content, label in splits[split]:
                try:
                    content.decode("utf-8")
                except UnicodeDecodeError:
                    # Keep the review: decode with replacement and count it.
                    undecodable += 1
                    content = content.decode("utf-8", errors="replace").encode()
                texts.append(content)
                labels.append(label)
        n_train = len(splits["train"])
        del splits
        bar.update()
        ranks, row_splits, words = tokenize_and_rank(texts)
        bar.update()
        x = encode(ranks, row_splits, num_words, maxlen)
        y = np.asarray(labels, dtype=np.int32)
        bar.update()
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


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays of Python lists and numbers, nothing else.

    An object array in an npz is a pickle; a pickle can call any importable function
    (os.system, eval). Only the globals numpy needs to rebuild an array are resolvable.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),  # files written by numpy < 2
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol-2 pickles (older numpy, the Keras imdb.npz era) spell bytes this way;
        # it only encodes a string.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it pickles {module}.{name}")
        return super().find_class(module, name)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The NPZ_ARRAYS of an npz, read without ever executing pickled code."""
    limit = max_data_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
            missing = [k for k in NPZ_ARRAYS if k not in infos]
            if missing:
                raise DataError(
                    f"npz {path} lacks arrays {', '.join(missing)}: expected "
                    f"{', '.join(NPZ_ARRAYS)}"
                )
            # Declared sizes bound what zipfile will inflate: check them before inflating.
            if sum(infos[k].file_size for k in NPZ_ARRAYS) > limit:
                big = max(NPZ_ARRAYS, key=lambda k: infos[k].file_size)
                raise _too_big(f"npz {path} (member {big}: {infos[big].file_size} bytes)", limit)
            out = {}
            for key in NPZ_ARRAYS:
                with zf.open(infos[key]) as f:
                    out[key] = _read_npy(f, f"npz {path} array {key}", infos[key].file_size)
            return out
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read npz {path}: {e}") from e


def _read_npy(f, what: str, size: int) -> np.ndarray:
    version = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(f)
    if not dtype.hasobject:
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > size:
            raise DataError(f"{what}: header claims {shape} {dtype}, more than the file holds")
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise DataError(f"{what} is truncated")
        arr = np.frombuffer(data, dtype=dtype)
        return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    try:
        arr = _ArrayUnpickler(f).load()
    except RetryableError:
        raise  # a signal (preemption) while reading is never bad data
    except Exception as e:  # anything a hostile or broken pickle can raise
        raise DataError(
            f"{what}: object arrays are not allowed except lists of integers ({e})"
        ) from e
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what}: object arrays are not allowed except lists of integers")
    return arr


def _describe(name: str, arr: np.ndarray) -> str:
    return f"{name} (shape {arr.shape}, dtype {arr.dtype})"


def _npz_reviews(raw: dict[str, np.ndarray], path: Path, split: str) -> list[np.ndarray]:
    """Check one split's arrays; return its reviews as int64 rank arrays."""
    xs, ys = raw[f"x_{split}"], raw[f"y_{split}"]
    expect_x = "one list of integer word ranks per review (1-D object array or 2-D integers)"
    if not ((xs.ndim == 1 and xs.dtype.hasobject) or (xs.ndim == 2 and xs.dtype.kind in "iu")):
        raise DataError(f"npz {path}: {_describe(f'x_{split}', xs)} is not {expect_x}")
    if ys.ndim != 1 or ys.dtype.kind not in "iub":
        raise DataError(
            f"npz {path}: {_describe(f'y_{split}', ys)} is not one integer label (0 or 1) "
            "per review"
        )
    if len(xs) != len(ys):
        raise DataError(
            f"npz {path}: {_describe(f'x_{split}', xs)} and {_describe(f'y_{split}', ys)} "
            "differ in length: expected one label per review"
        )
    seqs = []
    for i, review in enumerate(xs):
        seq = np.asarray(review) if not isinstance(review, np.ndarray) else review
        if seq.size == 0:
            seq = np.zeros(0, np.int64)
        if seq.ndim != 1 or seq.dtype.kind not in "iu" or (seq.size and seq.min() < 0):
            raise DataError(
                f"npz {path}: {_describe(f'x_{split}[{i}]', seq)} is not a list of "
                "non-negative integer word ranks"
            )
        # Ranks beyond int64 are as out of vocabulary as any rank past num_words.
        seqs.append(np.minimum(seq, np.iinfo(np.int64).max).astype(np.int64))
    return seqs


def encode_npz(path: Path, num_words: int, maxlen: int) -> tuple[dict, dict[str, int], dict]:
    """Keras `imdb.npz` (lists of 1-based ranks) -> the same encoding as load_data."""
    raw = _read_npz(path)
    rng = np.random.RandomState(SHUFFLE_SEED)
    arrays = {}
    for split in ("train", "test"):
        reviews = _npz_reviews(raw, path, split)
        ys = raw[f"y_{split}"].astype(np.int32)
        idx = _shuffled(len(reviews), rng)
        seqs, ys = [reviews[i] for i in idx], ys[idx]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        arrays[f"x_{split}"] = encode(flat, np.append(0, np.cumsum(lengths)), num_words, maxlen)
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


_CACHE_META = "meta"  # JSON (word index, stats) as uint8
_CACHE_SUM = "sha256"  # digest of the arrays and the meta, as uint8


def _cache_digest(members: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for name in (*NPZ_ARRAYS, _CACHE_META):
        arr = np.ascontiguousarray(members[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _read_cache(path: Path) -> tuple[dict, dict[str, int], dict] | None:
    """A verified cache entry, or None (absent; or corrupt: then warned about and removed)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            members = {k: f[k] for k in (*NPZ_ARRAYS, _CACHE_META, _CACHE_SUM)}
        if not np.array_equal(members[_CACHE_SUM], _cache_digest(members)):
            raise ValueError("checksum mismatch")
        meta = json.loads(members[_CACHE_META].tobytes())
        arrays = {k: members[k] for k in NPZ_ARRAYS}
        return arrays, meta["word_index"], meta["stats"]
    except RetryableError:
        raise  # a signal (preemption) while reading is never corruption: keep the cache
    except Exception as e:  # a damaged file can fail in any layer: zip, npy, JSON
        _warn(f"encoded-data cache {path} is corrupt ({type(e).__name__}: {e}); rebuilding it")
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _write_cache(path: Path, arrays: dict, word_index: dict, stats: dict) -> None:
    """Publish one self-verifying cache file by atomic rename; on failure, warn and go on."""
    from trainer.storage import write_new_file

    meta = json.dumps({"word_index": word_index, "stats": stats}).encode()
    members = {**arrays, _CACHE_META: np.frombuffer(meta, dtype=np.uint8)}
    members[_CACHE_SUM] = _cache_digest(members)
    buf = io.BytesIO()
    np.savez(buf, **members)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temp name per writer: concurrent cold loads each publish a whole file.
        tmp = write_new_file(path.parent, path.name, buf.getbuffer())
        try:
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as e:
        _warn(
            f"cannot write the encoded-data cache in {path.parent} "
            f"({e.strerror or e}); continuing without it"
        )


def load(
    source: str,
    num_words: int = 5000,
    maxlen: int = 100,
    sample: int = 0,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load, encode (or read from the cache) and optionally subsample the IMDB splits.

    Args:
        source: 'keras', a path/`file://`/`gs://` URI of imdb.npz, an aclImdb tarball or dir.
        num_words: vocabulary size (ids >= num_words become OOV).
        maxlen: padded review length.
        sample: if > 0, keep the first `sample` (shuffled) reviews of each split.
        cache_dir: where downloads and encoded arrays are cached.

    Raises:
        DataError: the source is missing, corrupt, or not a usable two-class dataset.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    local = resolve_source(source, cache)
    if local.is_dir():
        digest = hashlib.sha256()
        for p in sorted(local.rglob("*.txt")):
            st = p.stat()
            digest.update(f"{p.relative_to(local)}:{st.st_size}:{st.st_mtime_ns};".encode())
        source_sha = digest.hexdigest()
    else:
        source_sha = sha256_file(local)
    key = hashlib.sha256(
        f"v{ENCODER_VERSION}:{source_sha}:{num_words}:{maxlen}:{INDEX_FROM}".encode()
    ).hexdigest()[:24]
    cached = cache / "encoded" / f"{key}.npz"
    entry = _read_cache(cached)
    from_cache = entry is not None
    if entry is not None:
        arrays, word_index, stats = entry
    else:
        t0 = time.perf_counter()
        with open(local, "rb") if local.is_file() else contextlib.nullcontext() as f:
            is_npz = f is not None and f.read(4) == b"PK\x03\x04"
        arrays, word_index, stats = (encode_npz if is_npz else encode_reviews)(
            local, num_words, maxlen
        )
        stats["encode_seconds"] = round(time.perf_counter() - t0, 3)
        _check(arrays, source)
        _write_cache(cached, arrays, word_index, stats)
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


def make_tf_datasets(
    ds: Dataset,
    global_batch_size: int,
    seed: int = 0,
    eval_batch_size: int | None = None,
    even_batches: bool = False,
):
    """tf.data pipelines at the GLOBAL batch size (the strategy splits each batch).

    The test split is batched at `eval_batch_size` (default: the training batch): without
    gradients the batch size does not change the result, and larger batches are faster.

    With `even_batches` every training batch is full: the shuffled data repeats and an epoch
    is ceil(N / batch) batches, the last one completed from the next pass. A worker group
    needs that: the embedding's sparse gradient is all-gathered across workers, and a
    collective fails when the final batch splits into pieces of different shapes.

    Returns:
        (train, test, steps_per_epoch): steps_per_epoch is None unless `even_batches`.
    """
    import tensorflow as tf

    train = (
        tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
        .cache()
        .shuffle(len(ds.y_train), seed=seed, reshuffle_each_iteration=True)
    )
    steps = None
    if even_batches:
        train = train.repeat()
        steps = -(-len(ds.y_train) // global_batch_size)
    train = train.batch(global_batch_size).prefetch(tf.data.AUTOTUNE)
    test = (
        tf.data.Dataset.from_tensor_slices((ds.x_test, ds.y_test))
        .batch(eval_batch_size or global_batch_size)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, test, steps
