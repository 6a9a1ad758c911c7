"""Resume and promotion edge cases through the real trainer on a tiny corpus: unreadable
checkpoints fall back, a bad latest.json is named and never overwritten, and a complete but
unpromoted run promotes when started again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import final_iterations, run_trainer, trainer_args, write_tarball
from trainer import contract

pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(data, store) of one complete 3-epoch run `r1`, trained once for the module."""
    tmp = tmp_path_factory.mktemp("finished")
    data = write_tarball(tmp / "tiny.tar.gz")
    store = tmp / "out"
    proc = run_trainer([*args_for(data, store, tmp / "cache"), "--run-id", "r1", "--promote",
                        "false"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return data, store


def args_for(data: Path, store: Path, cache: Path) -> list[str]:
    return trainer_args(model="mean", data=data, output=store, epochs=EPOCHS, cache_dir=cache)


@pytest.fixture
def tiny(finished, tmp_path) -> list[str]:
    """Arguments for run r1 in a fresh copy of the finished store."""
    data, store = finished
    shutil.copytree(store, tmp_path / "out")
    return args_for(data, tmp_path / "out", tmp_path / "cache")


def out_dir(args: list[str]) -> Path:
    return Path(args[args.index("--output") + 1])


def unfinish(run: Path, keep_epochs: int) -> None:
    """Turn a finished run into one stopped after `keep_epochs` epochs."""
    for name in (contract.SUCCESS, contract.METRICS, contract.MODEL_FILE):
        (run / name).unlink()
    for epoch in range(keep_epochs + 1, EPOCHS + 1):
        (run / contract.checkpoint_key(epoch)).unlink()
        (run / contract.state_key(epoch)).unlink()


def test_complete_run_records_every_step(tiny):
    assert final_iterations(out_dir(tiny) / "mean" / "r1") == EPOCHS


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "checkpoint of epoch 2 is unreadable"),
        ("empty", "checkpoint of epoch 2 is unreadable"),
        ("no-state", "checkpoint of epoch 2 is unreadable"),
    ],
)
def test_unreadable_last_checkpoint_falls_back_to_the_one_before(tiny, damage, message):
    run = out_dir(tiny) / "mean" / "r1"
    unfinish(run, keep_epochs=2)
    ckpt = run / contract.checkpoint_key(2)
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        (run / contract.state_key(2)).unlink()
    proc = run_trainer([*tiny, "--run-id", "r1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert message in proc.stdout and "resuming run r1 after epoch 1 of 3" in proc.stdout
    assert (run / contract.SUCCESS).exists()
    metrics = json.loads((run / contract.METRICS).read_text())
    assert metrics["epochs_completed"] == EPOCHS
    assert final_iterations(run) == EPOCHS  # epoch 1's optimizer state was restored


def test_no_readable_checkpoint_starts_from_scratch(tiny):
    run = out_dir(tiny) / "mean" / "r1"
    unfinish(run, keep_epochs=1)
    (run / contract.checkpoint_key(1)).write_bytes(b"PK\x03\x04 cut")
    proc = run_trainer([*tiny, "--run-id", "r1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "starting from scratch" in proc.stdout
    assert json.loads((run / contract.METRICS).read_text())["epochs_completed"] == EPOCHS


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"hello": "world"}', "is not a run pointer"),
        (b'{"run_id": "../../x", "test_accuracy": 0.9}', "is not a run pointer"),
    ],
)
def test_bad_latest_json_is_named_kept_and_promotion_retried_on_rerun(tiny, pointer, message):
    latest = out_dir(tiny) / "mean" / contract.LATEST
    latest.write_bytes(pointer)
    proc = run_trainer([*tiny, "--run-id", "r2"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == contract.EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert len(lines) == 1 and str(latest) in lines[0] and message in lines[0], lines
    assert latest.read_bytes() == pointer  # never overwritten
    run = latest.parent / "r2"
    assert (run / contract.SUCCESS).exists()  # the run itself is complete
    latest.unlink()  # the operator removes the foreign file
    again = run_trainer([*tiny, "--run-id", "r2"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already complete" in again.stdout and "promoted to" in again.stdout
    assert json.loads(latest.read_text())["run_id"] == "r2"
