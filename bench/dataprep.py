"""Data preparation timing: raw tarball -> encoded arrays, cold (fresh cache) and cached.

Run as a subprocess by the benchmark (`python -m bench.dataprep --data ... --repeats 3`) so
that every cold run starts from a fresh interpreter and a fresh cache directory.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from bench.reference import RESULT_PREFIX
from trainer.contract import PROGRESS_ENV


def run(data: str, repeats: int = 3, keep_cache: str = "") -> dict:
    """Time trainer.data.load cold (fresh cache dir) and from its cache, `repeats` times each.

    The first run's cache is left in `keep_cache` (if given) for the training runs.
    """
    from trainer import data as data_mod

    cold, cached = [], []
    with tempfile.TemporaryDirectory(prefix="bench-dataprep-") as tmp:
        for i in range(repeats):
            cache = keep_cache if keep_cache and i == 0 else os.path.join(tmp, f"cache-{i}")
            t0 = time.perf_counter()
            ds = data_mod.load(data, 5000, 100, 0, cache)
            cold.append(time.perf_counter() - t0)
            assert not ds.from_cache
            t0 = time.perf_counter()
            again = data_mod.load(data, 5000, 100, 0, cache)
            cached.append(time.perf_counter() - t0)
            assert again.from_cache
    return {
        "cold_seconds": [round(s, 3) for s in cold],
        "cache_seconds": [round(s, 4) for s in cached],
        "cold_seconds_median": round(statistics.median(cold), 3),
        "cache_seconds_median": round(statistics.median(cached), 4),
        "reviews": int(len(ds.y_train) + len(ds.y_test)),
        "tokens": int(ds.stats.get("tokens", 0)),
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(PROGRESS_ENV, "0")
    import fire

    def cli(data: str, repeats: int = 3, keep_cache: str = "") -> None:
        print(RESULT_PREFIX + json.dumps(run(data, int(repeats), keep_cache)), flush=True)

    fire.Fire(cli, command=argv, name="dataprep")
    return 0


if __name__ == "__main__":
    sys.exit(main())
