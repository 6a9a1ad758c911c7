"""Resume and promotion edge cases through the real trainer on a tiny corpus: unreadable
checkpoints fall back, a bad latest.json is named and never overwritten, and a complete but
unpromoted run promotes when started again."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    final_iterations,
    run_trainer,
    signal_in_epoch_2,
    trainer_args,
    write_tarball,
)
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


# ----------------------------------------------------------------------------- in-epoch

GRACE_STANDARD_SPOT = 15  # seconds GKE gives a Spot VM's pods on Standard (Autopilot: 25)


def model_weights(path: Path) -> dict[str, np.ndarray]:
    """Every array in a .keras file's weights (layers and optimizer), by name."""
    import zipfile

    import h5py

    out = {}
    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f) as h5:
        h5.visititems(
            lambda name, obj: out.update({name: obj[()]}) if hasattr(obj, "shape") else None
        )
    return out


def test_sigterm_mid_epoch_resumes_from_that_step_to_the_uninterrupted_result(
    shared_tarball, warm_cache, tmp_path
):
    """SIGTERM inside epoch 2: the trainer checkpoints that step (weights, optimizer, data
    position) within Spot's grace and exits 75; the rerun trains only the rest of epoch 2,
    on the examples an uninterrupted run sees there, in its order, and ends with the very
    same model, test figures and (to rounding) history."""
    out = tmp_path / "runs"
    args = trainer_args(
        model="lstm", data=shared_tarball, output=out, epochs=2, sample=3000,
        cache_dir=warm_cache, neighbours="great", promote=False,
    )  # fmt: skip
    whole = run_trainer([*args, "--run-id", "whole"])
    assert whole.returncode == 0, whole.stderr[-2000:]

    first = signal_in_epoch_2([*args, "--run-id", "cut"], signal.SIGTERM)
    assert first.returncode == contract.EXIT_PREEMPTED, first.stderr[-2000:]
    assert first.seconds < GRACE_STANDARD_SPOT, first.seconds
    run = out / "lstm" / "cut"
    cut = [p for p in (run / "checkpoints").iterdir() if contract.in_epoch_position(
        f"checkpoints/{p.name}")]  # fmt: skip
    assert len(cut) == 1, sorted(p.name for p in (run / "checkpoints").iterdir())
    epoch, step = contract.in_epoch_position(f"checkpoints/{cut[0].name}")
    steps = -(-3000 // 64)
    assert epoch == 2 and 0 < step < steps
    part = json.loads((run / contract.in_epoch_state_key(epoch, step)).read_text())["in_epoch"]
    assert part["position"] == steps + step and part["steps"] == steps  # batches used

    again = run_trainer([*args, "--run-id", "cut"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run cut in epoch 2 of 2 from step {step} of {steps}" in again.stdout
    assert final_iterations(run) == 2 * steps  # no step run twice, none skipped
    a, b = model_weights(out / "lstm" / "whole" / contract.MODEL_FILE), model_weights(
        run / contract.MODEL_FILE)  # fmt: skip
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a), [
        k for k in a if not np.array_equal(a[k], b[k])
    ]
    ma = json.loads((out / "lstm" / "whole" / contract.METRICS).read_text())
    mb = json.loads((run / contract.METRICS).read_text())
    assert (mb["test_accuracy"], mb["test_loss"]) == (ma["test_accuracy"], ma["test_loss"])
    for key, values in ma["history"].items():
        assert mb["history"][key] == pytest.approx(values, rel=1e-5), key
