"""What every part of the data package shares: its error, the size ceiling, warnings,
progress bars and the cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from pathlib import Path

from trainer import contract
from trainer.contract import MAX_DATA_BYTES_DEFAULT, MAX_DATA_BYTES_ENV, KnownError
from trainer.numbers import bounded_int

# The arrays of a dataset, as Keras's imdb.npz names them (the npz reader, the cache).
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(KnownError, ValueError):
    """The data source is missing, corrupt, or not usable; the message says which and why."""


def max_data_bytes() -> int:
    """The ceiling on what a data source may expand to (bytes), from the environment."""
    raw = os.environ.get(MAX_DATA_BYTES_ENV, "")
    if not raw:
        return MAX_DATA_BYTES_DEFAULT
    try:  # int() alone takes Unicode digits ('٣' is 3)
        value = bounded_int(raw, MAX_DATA_BYTES_ENV, 1, 1 << 50)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"invalid {MAX_DATA_BYTES_ENV}={raw!r}: expected a positive byte count")
    return value


def too_big(what: str, limit: int) -> DataError:
    return DataError(
        f"{what} expands beyond the ceiling of {limit} bytes ({MAX_DATA_BYTES_ENV}): a "
        f"decompression bomb or the wrong file; raise {MAX_DATA_BYTES_ENV} if it is genuine"
    )


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    env = os.environ.get(contract.CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imdb-train"


def progress(total=None, desc="", unit="it", **kw):
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


def available_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup's CPU quota
    (a pod's CPU limit), never the node's count that os.cpu_count() reports."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU limit in cores from cgroup v2 (cpu.max) or v1 (cfs quota / period)."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path(root, "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def read_npy_header(f) -> tuple[tuple[int, ...], bool, object]:
    """(shape, fortran order, dtype) of the .npy array that starts at `f`'s position, which is
    left at the array's first byte; format 1.0 or 2.0, as numpy writes them."""
    import numpy as np

    version = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    return read_header(f)
