"""Raw reviews out of an aclImdb tarball (ustar, pax, gzip) or directory, within the ceiling."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import tarfile
import zlib
from pathlib import Path

from trainer.data.common import DataError, max_data_bytes, too_big, warn

_REVIEW_RE = re.compile(rb"(?:^|/)(train|test)/(pos|neg)/([^/]+)\.txt$")


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
                raise too_big(f"tarball {path}", limit)
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
                raise too_big(f"directory {root}", limit)
            members.append((os.path.relpath(full, root).replace(os.sep, "/").encode(), content))
    if skipped:
        warn(f"skipped {skipped} entries of {root} that are not regular files "
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
            raise too_big(f"data source {path}", limit)
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
