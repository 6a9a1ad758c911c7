"""End to end: `python -m trainer` on a sample of the real data, two CPU replicas,
every artifact checked, on the local store and on the GCS emulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_trainer, trainer_args
from trainer import contract
from trainer.storage import open_store

pytestmark = pytest.mark.slow

ARTIFACTS = [*contract.RUN_FILES, contract.checkpoint_key(1), contract.state_key(1)]


def check_run(store, model: str, run_id: str, replicas: int) -> dict:
    run = store.child(model, run_id)
    keys = set(run.list())
    missing = [a for a in ARTIFACTS if a not in keys]
    assert not missing, f"missing artifacts: {missing}"
    assert any(k.startswith("tensorboard/") for k in keys)
    metrics = json.loads(run.read_bytes("metrics.json"))
    assert metrics["model"] == model and metrics["run_id"] == run_id
    assert metrics["epochs_completed"] == 1 and metrics["replicas"] == replicas
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(metrics["history"][key]) == 1
    assert len(metrics["epoch_seconds"]) == 1 and metrics["epoch_seconds"][0] > 0
    config = json.loads(run.read_bytes("config.json"))
    assert config["config"]["model"] == model and config["replicas"] == replicas
    assert len(config["data"]["sha256"]) == 64
    assert config["versions"]["numpy"]
    # What it trained on, as TensorFlow reports it on this CPU machine.
    devices = config["devices"]
    assert devices["gpus"] == [] and devices["gpus_requested"] == 0 and devices["cpus"] >= 1
    assert devices["cuda_build"] is False and devices["driver_version"] is None
    cost = metrics["cost"]
    assert cost["pods"] == 1 and cost["gpus_per_pod"] == 0 and cost["gpu_seconds"] == 0
    assert cost["pod_seconds"] > 0 and cost["pod_seconds_by_phase"]["trained"] > 0
    marks = metrics["phases"]
    assert cost["pod_seconds"] == pytest.approx(marks["tested"] - marks["started"], abs=0.01)
    neighbours = json.loads(run.read_bytes("neighbours.json"))
    assert neighbours["metric"] == "euclidean" and neighbours["k"] == 5
    assert set(neighbours["queries"]) == {"great", "bad"}
    for found in neighbours["queries"].values():
        assert len(found) == 5
        assert not {n["word"] for n in found} & {"<pad>", "<start>", "<oov>", "<unused>"}
        assert [n["distance"] for n in found] == sorted(n["distance"] for n in found)
    assert neighbours["unknown"] == []
    word_index = json.loads(run.read_bytes("word_index.json"))
    assert word_index["the"] == 1
    vectors = np.loadtxt(
        run.read_bytes("embedding/vectors.tsv").decode().splitlines(), delimiter="\t"
    )
    labels = run.read_bytes("embedding/metadata.tsv").decode().splitlines()
    assert vectors.shape == (5000, 32) and len(labels) == 5000
    assert labels[:4] == ["<pad>", "<start>", "<oov>", "<unused>"] and labels[4] == "the"
    assert run.read_bytes("curves.png")[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


def small_run(model: str, output: str, run_id: str, tarball, cache) -> list[str]:
    """One epoch on 512 reviews over two logical CPUs, with neighbours: the runs here."""
    return trainer_args(
        model=model, data=tarball, output=output, run_id=run_id, epochs=1, sample=512,
        cpu_devices=2, neighbours=("great", "bad"), k=5, cache_dir=cache,
    )  # fmt: skip


@pytest.mark.parametrize("model", ["mean", "lstm"])
def test_one_epoch_two_replicas_local_store(model, shared_tarball, warm_cache, tmp_path):
    out = tmp_path / "runs"
    proc = run_trainer(small_run(model, str(out), f"it-{model}", shared_tarball, warm_cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = check_run(open_store(str(out)), model, f"it-{model}", replicas=2)
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in proc.stdout
    # Only the mean model's neighbours are shown; both runs record them.
    assert ("nearest to 'great':" in proc.stdout) == (model == contract.NEIGHBOURS_MODEL)
    latest = json.loads((out / model / "latest.json").read_text())
    assert latest["run_id"] == f"it-{model}"


def test_same_run_on_gcs_emulator(shared_tarball, warm_cache, gcs_bucket):
    output = f"gs://{gcs_bucket}/imdb"
    proc = run_trainer(small_run("mean", output, "gcs-1", shared_tarball, warm_cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = open_store(f"gs://{gcs_bucket}/imdb")
    check_run(store, "mean", "gcs-1", replicas=2)
    assert json.loads(store.read_bytes("mean/latest.json"))["run_id"] == "gcs-1"


def test_rerun_of_a_complete_run_does_nothing(shared_tarball, warm_cache, tmp_path):
    args = trainer_args(
        model="mean", data=shared_tarball, output=tmp_path, run_id="again", epochs=1,
        sample=256, cache_dir=warm_cache,
    )  # fmt: skip
    assert run_trainer(args).returncode == 0
    before = (tmp_path / "mean" / "again" / "metrics.json").read_bytes()
    second = run_trainer(args)
    assert second.returncode == 0
    assert "already complete" in second.stdout
    assert (tmp_path / "mean" / "again" / "metrics.json").read_bytes() == before


def test_a_pod_that_asked_for_a_gpu_and_has_none_trains_nothing(shared_tarball, warm_cache,
                                                                 tmp_path):  # fmt: skip
    """TensorFlow would train on the CPU without a word: asked for 1, found 0 -> one line,
    exit 2 (this TensorFlow has no CUDA: every node would fail alike), nothing written."""
    args = trainer_args(model="mean", data=shared_tarball, output=tmp_path / "runs",
                        run_id="nogpu", epochs=1, sample=256, cache_dir=warm_cache)  # fmt: skip
    proc = run_trainer(args, **{contract.GPUS_ENV: "1"})
    assert proc.returncode == contract.EXIT_BAD_INPUT, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the pod asked for 1 GPU(s) (IMDB_TRAIN_GPUS), TensorFlow")
    assert "sees 0: GPUs none; driver none; TensorFlow built without CUDA" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
