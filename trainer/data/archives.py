"""Raw reviews out of an aclImdb tarball (ustar, pax, gzip) or directory, within the ceiling,
read as a stream: one member in memory at a time, never the whole archive."""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from trainer.data.common import DataError, max_data_bytes, too_big, warn

SPLITS = ("train", "test")  # in dataset order
_REVIEW_RE = re.compile(rb"(?:^|/)(train|test)/(pos|neg)/([^/]+)\.txt$")


_CHUNK = 1 << 22  # bytes inflated or read at a time: memory stays flat in the archive size


class _Reader:
    """read(n) over an iterator of byte chunks (the archive, decompressed as it is read)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.offset = 0  # bytes returned so far

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            out = self._buf[self._pos :] + b"".join(self._chunks)
            self._buf, self._pos = b"", 0
            self.offset += len(out)
            return out
        while len(self._buf) - self._pos < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        self.offset += len(out)
        return out

    def drain(self) -> None:
        """Read to the end: a damaged gzip stream after the tar's end marker still fails."""
        for _ in self._chunks:
            pass


class _Prepend:
    """A file-like reader that returns `head` first, then the rest of `reader`."""

    def __init__(self, head: bytes, reader: _Reader):
        self._head, self._reader = head, reader

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._reader.read(n)
        if n < 0 or n > len(self._head):
            out, self._head = self._head, b""
            return out + self._reader.read(-1 if n < 0 else n - len(out))
        out, self._head = self._head[:n], self._head[n:]
        return out


def _tar_members(reader: _Reader, origin: str) -> Iterator[tuple[bytes, bytes]]:
    """(name, content) of regular files, in archive order; a fast ustar walk, with the
    general tarfile reader taking over at the first pax or GNU header."""
    while True:
        off = reader.offset
        header = reader.read(512)
        if len(header) < 512:
            # A complete archive ends with a zero block; running out of bytes first means
            # the file was cut short.
            raise DataError(f"truncated tarball {origin}: no end-of-archive marker")
        if header == b"\0" * 512:
            reader.drain()
            return
        kind = header[156:157]
        chksum = header[148:156].rstrip(b"\0 ")
        if kind not in (b"0", b"\0", b"5") or not chksum:
            yield from _tar_members_slow(_Prepend(header, reader), origin)  # pax / GNU names
            reader.drain()
            return
        if int(chksum, 8) != sum(header[:148]) + 256 + sum(header[156:]):
            raise DataError(f"corrupt tarball {origin}: bad header checksum at byte {off}")
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        name = header[:100].rstrip(b"\0")
        prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
        content = reader.read(size)
        if len(content) < size:
            member = name.decode(errors="replace")
            raise DataError(f"truncated tarball {origin}: {member} is cut off")
        reader.read((size + 511) // 512 * 512 - size)
        if kind != b"5":
            yield (prefix + b"/" + name if prefix else name), content


def _tar_members_slow(f, origin: str) -> Iterator[tuple[bytes, bytes]]:
    try:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                if m.isfile():
                    yield m.name.encode(), tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"corrupt or truncated tarball {origin}: {e}") from e


def _gunzip(f: BinaryIO, path: Path, limit: int) -> Iterator[bytes]:
    """The inflated bytes in chunks, stopping as soon as the output passes `limit`.

    zlib directly rather than GzipFile: GzipFile's chunked reads cost twice the time.
    """
    size, pending = 0, b""
    inflater: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while True:
            if not pending:
                pending = f.read(1 << 20)
                if not pending:
                    if inflater is None:
                        return
                    raise DataError(
                        f"corrupt or truncated tarball {path}: the gzip stream ends early"
                    )
            if inflater is None:  # after a member: zero padding, or the next member
                if not pending.strip(b"\0"):
                    pending = b""
                    continue
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(pending, _CHUNK)
            size += len(chunk)
            if size > limit:
                raise too_big(f"tarball {path}", limit)
            if chunk:
                yield chunk
            if inflater.eof:
                pending, inflater = inflater.unused_data, None
            else:
                pending = inflater.unconsumed_tail
    except zlib.error as e:
        raise DataError(f"corrupt or truncated tarball {path}: {e}") from e


def _plain(f: BinaryIO) -> Iterator[bytes]:
    yield from iter(lambda: f.read(_CHUNK), b"")


def _directory_files(root: Path) -> list[tuple[str, str]]:
    """(relative name, full path) of the *.txt files under root, links not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".txt"):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return out


def _read_directory(root: Path, limit: int) -> Iterator[tuple[bytes, bytes]]:
    """(relative name, content) of the regular *.txt files under root, links not followed,
    the reviews in their dataset order (train then test, by name), read one at a time.

    Symlinks (to files outside the dataset, to devices, dangling), FIFOs, sockets and
    devices are skipped and counted; a file that cannot be read is refused with its name.
    The ceiling counts the bytes actually read, so nothing can read past it.
    """
    files = _directory_files(root)
    # The order of the dataset: a stream in that order needs no second pass to rank words.
    files.sort(key=lambda f: _order_key(f[0].encode()))
    total, skipped = 0, 0
    for rel, full in files:
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
            raise too_big(f"directory {root}", limit)
        yield rel.encode(), content
    if skipped:
        warn(f"skipped {skipped} entries of {root} that are not regular files "
              "(symlinks, FIFOs, devices): only the dataset's own files are read")  # fmt: skip


def _order_key(name: bytes) -> tuple[int, str]:
    """Where a member sorts in the dataset: train before test, then by name."""
    m = _REVIEW_RE.search(name)
    return (0 if m is None else SPLITS.index(m.group(1).decode()), name.decode(errors="replace"))


def iter_reviews(path: Path) -> Iterator[tuple[str, str, bytes, int]]:
    """(split, name, text_bytes, label) of an aclImdb tarball or directory, one at a time,
    in archive order (a directory: dataset order); other members are skipped."""
    limit = max_data_bytes()
    if path.is_dir():
        members: Iterator[tuple[bytes, bytes]] = _read_directory(path, limit)
        f = None
    else:
        if path.stat().st_size > limit:
            raise too_big(f"data source {path}", limit)
        f = open(path, "rb")  # noqa: SIM115 (closed below, also when the caller stops early)
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        members = _tar_members(_Reader(_gunzip(f, path, limit) if gz else _plain(f)), str(path))
    try:
        for name, content in members:
            m = _REVIEW_RE.search(name)
            if m:
                split, label = m.group(1).decode(), int(m.group(2) == b"pos")
                yield split, name.decode(errors="replace"), content, label
    finally:
        if f is not None:
            f.close()


def no_reviews(path: Path, missing: list[str]) -> DataError:
    return DataError(
        f"no {'/'.join(missing)} reviews in {path}: expected "
        "aclImdb/{train,test}/{pos,neg}/*.txt"
    )


def read_reviews(path: Path) -> dict[str, list[tuple[str, bytes, int]]]:
    """Read raw reviews from an aclImdb tarball or directory (all of them, in memory).

    Returns:
        {"train": [(name, text_bytes, label)], "test": [...]}, sorted by name.
    """
    splits: dict[str, list[tuple[str, bytes, int]]] = {s: [] for s in SPLITS}
    for split, name, content, label in iter_reviews(path):
        splits[split].append((name, content, label))
    for split in splits.values():
        split.sort(key=lambda r: r[0])
    missing = [s for s, v in splits.items() if not v]
    if missing:
        raise no_reviews(path, missing)
    return splits
