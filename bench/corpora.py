"""Larger corpora from the IMDB tarball: N copies of every review, each copy after the
first with two of its words swapped (a reproducible perturbation: the same bytes every
time, on every machine), as an aclImdb-layout tarball read and written as a stream.

Copy k of `aclImdb/train/pos/123_9.txt` is `aclImdb/train/pos/123c{k}_9.txt`: the same
split and label, so an N-times corpus has N times the reviews of each split.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import zlib
from pathlib import Path

VERSION = 1  # bump when the scheme changes: the file name carries it


def perturbed(text: bytes, name: str, k: int) -> bytes:
    """Copy k (>= 1) of a review: two of its space-separated words swapped, chosen by a
    generator seeded from the member's name and k."""
    words = text.split(b" ")
    if len(words) < 2:
        return text
    rng = random.Random(zlib.crc32(name.encode()) * 1000 + k)
    i, j = rng.sample(range(len(words)), 2)
    words[i], words[j] = words[j], words[i]
    return b" ".join(words)


def _copy_name(name: str, k: int) -> str:
    head, _, tail = name.rpartition("/")
    stem, sep, rating = tail.partition("_")
    return f"{head}/{stem}c{k}{sep}{rating}"


def build(source: Path, factor: int, dest: Path, compresslevel: int = 1) -> Path:
    """`factor` copies of every review of `source` in one gzip tarball at `dest` (kept if
    it is already there: the name says the scheme and the factor). Written under a temp
    name and renamed: a build cut short leaves nothing that looks finished."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with (
            tarfile.open(source, "r|gz") as src,
            tarfile.open(
                tmp, "w:gz", compresslevel=compresslevel, format=tarfile.USTAR_FORMAT
            ) as out,
        ):
            for member in src:
                if not member.isfile():
                    continue
                text = src.extractfile(member).read()
                is_review = member.name.endswith(".txt") and "/" in member.name
                for k in range(factor if is_review else 1):
                    body = text if k == 0 else perturbed(text, member.name, k)
                    info = tarfile.TarInfo(member.name if k == 0 else _copy_name(member.name, k))
                    info.size, info.mtime, info.mode = len(body), 0, 0o644
                    out.addfile(info, io.BytesIO(body))
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def path_for(root: Path, factor: int) -> Path:
    return root / f"imdb-{factor}x-v{VERSION}.tar.gz"
