"""Run the real trainer CLI in a subprocess, and snapshot a store to prove nothing was lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from trainer.contract import CONFIG, LATEST, METRICS, SUCCESS, run_key


def trainer_env(**extra: str) -> dict:
    return {**os.environ, "IMDB_TRAIN_PROGRESS": "0", "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1", **extra}  # fmt: skip


def run_trainer(args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT,
                          env=trainer_env(**env), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def seed_good_run(out: Path, model: str = "mean", run_id: str = "good") -> None:
    """An earlier finished, promoted run as files (the trainer's layout, not its training)."""
    run = out / run_key(model, run_id)
    run.mkdir(parents=True)
    (run / CONFIG).write_text(json.dumps({"model": model}))
    (run / METRICS).write_text(json.dumps({"test_accuracy": 0.8, "epochs_completed": 1}))
    (run / SUCCESS).write_text("")
    (out / model / LATEST).write_text(json.dumps({"run_id": run_id, "test_accuracy": 0.8}))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): equal snapshots mean nothing changed."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
