"""Encoded arrays and the word index cached on disk, one self-verifying file per entry.

A cache entry is published by atomic rename and verified by its own sha256 on every read:
a corrupt entry is rebuilt, and a cache that cannot be written (disk full) only costs the
next run time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from trainer.data.common import NPZ_ARRAYS, read_npy_header, warn
from trainer.termination import RetryableError

_CACHE_META = "meta"  # JSON (word index, stats) as uint8


_CACHE_SUM = "sha256"  # digest of the arrays and the meta, as uint8


def _cache_digest(members: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for name in (*NPZ_ARRAYS, _CACHE_META):
        arr = np.ascontiguousarray(members[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.reshape(-1).view(np.uint8).data if arr.size else b"")  # no copy of a map
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """The members of an uncompressed npz, memory-mapped: processes on a node that read the
    same entry share its pages, and nothing is read that is not used."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {name} is compressed")
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"member {name} has no local header")
            start = info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
            f.seek(start)
            shape, fortran, dtype = read_npy_header(f)
            if dtype.hasobject:
                raise ValueError(f"member {name} holds objects")
            offset, size = f.tell(), int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            end = min(start + info.file_size, os.fstat(f.fileno()).st_size)
            if offset + size > end:
                raise ValueError(f"member {name} is truncated")
            order = "F" if fortran else "C"
            out[name] = (
                np.asarray(np.memmap(f, dtype, "r", offset, shape, order))
                if size
                else np.zeros(shape, dtype, order=order)
            )
    return out


def read(path: Path) -> tuple[dict, dict[str, int], dict] | None:
    """A verified cache entry, or None (absent; or corrupt: then warned about and removed).

    The arrays are read-only maps of the file (see `_mapped`)."""
    if not path.exists():
        return None
    try:
        mapped = _mapped(path)
        members = {k: mapped[k] for k in (*NPZ_ARRAYS, _CACHE_META, _CACHE_SUM)}
        if not np.array_equal(members[_CACHE_SUM], _cache_digest(members)):
            raise ValueError("checksum mismatch")
        meta = json.loads(members[_CACHE_META].tobytes())
        arrays = {k: members[k] for k in NPZ_ARRAYS}
        return arrays, meta["word_index"], meta["stats"]
    except RetryableError:
        raise  # a signal (preemption) while reading is never corruption: keep the cache
    except Exception as e:  # a damaged file can fail in any layer: zip, npy, JSON
        warn(f"encoded-data cache {path} is corrupt ({type(e).__name__}: {e}); rebuilding it")
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def write(path: Path, arrays: dict, word_index: dict, stats: dict) -> None:
    """Publish one self-verifying cache file by atomic rename; on failure, warn and go on.

    The file is written member by member into its temp file (numpy writes an array in
    buffers of a few MB): memory stays the arrays themselves plus a constant, never a
    second copy of them."""
    from trainer.storage import replace_file

    meta = json.dumps({"word_index": word_index, "stats": stats}).encode()
    members = {**arrays, _CACHE_META: np.frombuffer(meta, dtype=np.uint8)}
    members[_CACHE_SUM] = _cache_digest(members)
    try:
        # A unique temp name per writer: concurrent cold loads each publish a whole file.
        replace_file(path, lambda f: np.savez(f, **members))
    except OSError as e:
        warn(
            f"cannot write the encoded-data cache in {path.parent} "
            f"({e.strerror or e}); continuing without it"
        )
