"""`python -m bench.export_npz OUT.npz`: the encoded splits as a plain npz for the GPU scripts.

Writes x_train, y_train, x_test, y_test (int32, padded to 100, ids < 5000) exactly as
trainer.data.load produces them from the shared aclImdb tarball, so a machine without
this project (or TensorFlow) can train on the same arrays.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from trainer.contract import PROGRESS_ENV


def export(out: str, data: str = "", sample: int = 0, cache_dir: str = "") -> Path:
    """Encode (or read from the cache) and write the four arrays to `out`."""
    from bench.runner import SHARED_TARBALL
    from trainer import data as data_mod

    ds = data_mod.load(data or str(SHARED_TARBALL), 5000, 100, int(sample), cache_dir or None)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        x_train=ds.x_train.astype(np.int32),
        y_train=ds.y_train.astype(np.int32),
        x_test=ds.x_test.astype(np.int32),
        y_test=ds.y_test.astype(np.int32),
    )
    print(f"wrote {path}: {len(ds.y_train)} train / {len(ds.y_test)} test reviews")
    return path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(PROGRESS_ENV, "0")
    import fire

    def cli(out: str, data: str = "", sample: int = 0, cache_dir: str = "") -> None:
        export(out, data, sample, cache_dir)

    fire.Fire(cli, command=argv, name="export_npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
