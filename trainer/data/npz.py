"""Keras's imdb.npz read without pickle: object arrays of integer lists (the Keras layout)
go through an unpickler that can only build arrays and lists; sizes are checked before
anything is inflated."""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from trainer.data.common import NPZ_ARRAYS, DataError, max_data_bytes, read_npy_header, too_big
from trainer.termination import RetryableError


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


def read_npz(path: Path) -> dict[str, np.ndarray]:
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
                raise too_big(f"npz {path} (member {big}: {infos[big].file_size} bytes)", limit)
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
    shape, fortran, dtype = read_npy_header(f)
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


def npz_reviews(raw: dict[str, np.ndarray], path: Path, split: str) -> list[np.ndarray]:
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
