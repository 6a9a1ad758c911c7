"""What every part of the data package shares: its error, the size ceiling, warnings,
progress bars and the cache folder."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from trainer import contract
from trainer.contract import MAX_DATA_BYTES_DEFAULT, MAX_DATA_BYTES_ENV
from trainer.numbers import bounded_int

# The arrays of a dataset, as Keras's imdb.npz names them (the npz reader, the cache).
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
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
