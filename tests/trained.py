"""A small trained run shared by the prediction and serving tests (trained once per session).

Two logical CPU replicas, so the serving export is checked on a model trained under a
MirroredStrategy; 512 reviews of each split of the real data, one epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, trainer_args, trainer_env

SAMPLE = 512


@dataclass
class SampleRun:
    store: Path  # the store root: <store>/mean/<run_id>
    run_id: str
    run_dir: Path
    metrics: dict
    texts: list[bytes]  # the raw test reviews the run was evaluated on, in order
    labels: np.ndarray
    cache: Path


def run_module(module: str, args: list[str], timeout: float = 300, **kw):
    env = trainer_env(**kw.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=kw.pop("cwd", ROOT),
        env=env,
        capture_output=True,
        timeout=timeout,
        **kw,
    )


@pytest.fixture(scope="session")
def sample_run(shared_tarball, warm_cache, tmp_path_factory) -> SampleRun:
    from tests.helpers import shared_dir
    from trainer import data

    def train(store: Path) -> None:
        args = trainer_args(
            model="mean", data=shared_tarball, output=store, run_id="sample", epochs=1,
            sample=SAMPLE, cpu_devices=2, neighbours="great", k=3, cache_dir=warm_cache,
        )  # fmt: skip
        proc = run_module("trainer", args)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # Trained once per session, for every worker process: the tests only read it.
    store = shared_dir(tmp_path_factory, "sample-run", train)
    run_dir = store / "mean" / "sample"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["test_examples"] == SAMPLE
    texts, labels = data.raw_split(str(shared_tarball), "test", cache_dir=warm_cache)
    return SampleRun(store, "sample", run_dir, metrics, texts[:SAMPLE], labels[:SAMPLE], warm_cache)
