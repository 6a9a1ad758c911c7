"""Small real filesystems for tests: a tmpfs that fills up (ENOSPC) or is read-only (EROFS).

Mounting needs root with CAP_SYS_ADMIN (as in the project's test container); elsewhere the
tests that need one are skipped, never faked.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int, *, read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of `size_kib` KiB at `path` (created) for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Fill the filesystem of directory `path` until at most `leave` bytes are free."""
    import os

    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with open(path / "filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))
