"""jobs.results reads finished runs from a local store and from GCS (emulator on loopback)."""

from __future__ import annotations

import json
import uuid

import pytest

from jobs import results
from tests.helpers import gcs_client
from trainer import contract
from trainer.config import TrainConfig
from trainer.promotion import promote as promote_run
from trainer.promotion import to_json
from trainer.state import RunState
from trainer.storage import open_store

pytestmark = pytest.mark.timeout(120)

NEIGHBOURS = {
    "lstm": {"great": [("excellent", 0.12), ("superb", 0.15), ("wonderful", 0.2)],
             "awful": [("terrible", 0.1), ("horrible", 0.14), ("worst", 0.22)]},
    "mean": {"great": [("fine", 0.3), ("good", 0.31), ("nice", 0.4)],
             "awful": [("bad", 0.25), ("poor", 0.3), ("dull", 0.33)]},
}  # fmt: skip


def write_run(store, model: str, run_id: str, accuracy: float, *, finished: bool = True):
    """A run laid out as the trainer lays it out: the contract's keys, the trainer's own
    RunState and config serialisation (we test the reader, not the training)."""
    run = store.child(model, run_id)
    state = RunState()
    state.add_epoch(12.0, {"loss": 0.6, "accuracy": 0.7, "val_loss": 0.5, "val_accuracy": 0.75})
    state.add_epoch(
        10.0,
        {"loss": 0.4, "accuracy": accuracy, "val_loss": 0.45, "val_accuracy": accuracy - 0.01},
    )
    metrics = {
        "model": model,
        "run_id": run_id,
        "test_accuracy": accuracy,
        "test_loss": 1 - accuracy,
        "epochs_completed": state.epochs_completed,
        "history": state.curves(),
        "epoch_seconds": state.epoch_seconds,
        "replicas": 1,
    }
    neighbours = {
        "metric": "cosine",
        "k": 3,
        "queries": {
            q: [{"word": w, "distance": d} for w, d in hits]
            for q, hits in NEIGHBOURS[model].items()
        },
        "unknown": [],
    }
    config = {"config": TrainConfig(model=model, run_id=run_id, epochs=2).to_dict()}
    files = {
        contract.CONFIG: to_json(config),
        contract.METRICS: to_json(metrics),
        contract.NEIGHBOURS: to_json(neighbours),
        contract.MODEL_FILE: b"PK\x03\x04 fake keras zip",
        contract.WORD_INDEX: json.dumps({"the": 1, "great": 2}).encode(),
        contract.EMBEDDING_VECTORS: b"0.1\t0.2\n0.3\t0.4\n",
        contract.EMBEDDING_METADATA: b"the\ngreat\n",
        contract.CURVES: b"\x89PNG fake",
        contract.checkpoint_key(2): b"PK\x03\x04 fake checkpoint",
        contract.state_key(2): state.to_json(),
        f"{contract.TENSORBOARD_DIR}/train/events.out.tfevents.1": b"events",
    }
    for name, data in files.items():
        run.write_bytes(name, data)
    if finished:
        run.write_bytes(contract.SUCCESS, to_json({"run_id": run_id}))
    assert (set(contract.RUN_FILES) <= set(run.list())) == finished


def promote(store, model: str, run_id: str, accuracy: float):
    """Point latest.json at the run with the trainer's own promotion."""
    cfg = TrainConfig(model=model, run_id=run_id)
    decision = promote_run(cfg, {"test_accuracy": accuracy}, store.child(model))
    assert decision.promoted, decision


@pytest.fixture(scope="module", params=["local", "gcs"])
def output(request, tmp_path_factory):
    """A store with finished runs, written once per backend (the emulator is slow under load)."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "local":
            uri = str(tmp_path_factory.mktemp("store"))
        else:
            url = request.getfixturevalue("gcs_emulator")
            mp.setenv("STORAGE_EMULATOR_HOST", url)
            mp.setenv("IMDB_TRAIN_GCS_DEADLINE", "30")
            bucket = f"results-{uuid.uuid4().hex[:12]}"
            gcs_client(url).create_bucket(bucket)
            uri = f"gs://{bucket}/imdb"
        store = open_store(uri)
        write_run(store, "lstm", "r1", 0.861)
        write_run(store, "lstm", "r2", 0.874)
        write_run(store, "mean", "r1", 0.842)
        write_run(store, "lstm", "r3", 0.5, finished=False)
        promote(store, "lstm", "r2", 0.874)
        yield uri


def cli(capsys, *argv):
    code = results.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_state_accuracy_and_promotion(output, capsys):
    code, out, _ = cli(capsys, "list", "--output", output)
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["MODEL", "RUN-ID", "STATE", "TEST-ACC", "EPOCHS", "PROMOTED"]
    assert ["lstm", "r2", "complete", "0.8740", "2", "*"] in rows
    assert ["lstm", "r1", "complete", "0.8610", "2"] in rows
    assert ["lstm", "r3", "incomplete", "0.5000", "2"] in rows
    assert ["mean", "r1", "complete", "0.8420", "2"] in rows


def test_show_latest_prints_metrics_and_neighbours(output, capsys):
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "lstm")
    assert code == 0
    assert f"run lstm/r2 in {output}" in out
    assert "test accuracy  0.8740" in out
    assert "great: excellent (0.120), superb (0.150), wonderful (0.200)" in out
    assert "awful: terrible (0.100)" in out


def test_show_json(output, capsys):
    code, out, _ = cli(
        capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1", "--json-output"
    )
    assert code == 0
    data = json.loads(out)
    assert data["metrics"]["test_accuracy"] == 0.842
    assert data["neighbours"]["queries"]["great"][0]["word"] == "fine"


def test_compare_side_by_side(output, capsys):
    code, out, _ = cli(capsys, "compare", "lstm/r1", "lstm/latest", "mean/r1", "--output", output)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["lstm/r1", "lstm/r2", "mean/r1"]
    assert lines[1].split() == ["test_accuracy", "0.8610", "0.8740", "0.8420"]
    assert any(
        line.startswith("near 'great'") and "excellent" in line and "fine" in line for line in lines
    )


def test_pull_downloads_the_artifacts(output, capsys, tmp_path):
    dest = tmp_path / "pulled"
    code, out, _ = cli(capsys, "pull", "--output", output, "--model", "lstm", "--dest", str(dest))
    assert code == 0
    run = dest / "lstm" / "r2"
    assert json.loads((run / "metrics.json").read_text())["run_id"] == "r2"
    assert (run / "neighbours.json").exists() and (run / "_SUCCESS").exists()
    assert (run / "embedding" / "vectors.tsv").read_text() == "0.1\t0.2\n0.3\t0.4\n"
    assert not (run / "checkpoints").exists()  # only with --checkpoints
    assert "pulled 10 files of lstm/r2" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "--model", "lstm", "--run-id", "r3"], 2,
         "error: run lstm/r3 in {output} is incomplete (no _SUCCESS)"),
        (["show", "--model", "lstm", "--run-id", "r9"], 2,
         "error: run lstm/r9 in {output} does not exist"),
        (["show", "--model", "mean"], 2, "error: no promoted mean run in {output}"),
        (["show", "--model", "cnn"], 2, "error: invalid model 'cnn': expected one of mean, lstm"),
        (["pull", "--model", "lstm", "--run-id", "r3"], 2, "error: run lstm/r3"),
        (["compare", "lstm/r1"], 2, "error: invalid runs ['lstm/r1']: expected at least two"),
        (["compare", "lstm/r1", "r2"], 2, "error: invalid run 'r2': expected MODEL/RUN_ID"),
    ],
)  # fmt: skip
def test_errors_are_one_line(output, capsys, argv, code, message):
    got, _, err = cli(capsys, *argv, "--output", output)
    assert got == code
    assert err.startswith(message.format(output=output))
    assert len(err.strip().splitlines()) == 1


def test_bad_store_uri(capsys):
    code, _, err = cli(capsys, "list", "--output", "s3://bucket/x")
    assert code == 1
    assert err.startswith("error: unknown output scheme 's3'")


def test_show_says_what_trained_the_run(output, capsys):
    store = open_store(output)
    key = contract.run_key("mean", "r1", contract.CONFIG)
    doc = json.loads(store.read_bytes(key))
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1")
    assert code == 0 and "trained by     unknown (a run from before builds" in out
    doc["build"] = {
        "in_image": True,
        "image": "reg/imdb-train@sha256:" + "a" * 64,
        "revision": "0123abc",
        "lock": "image-cpu.lock",
        "lock_sha256": "f" * 64,
    }
    store.write_bytes(key, json.dumps(doc).encode())
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1")
    assert (
        f"trained by     image reg/imdb-train@sha256:{'a' * 64}, revision 0123abc, "
        f"image-cpu.lock sha256 {'f' * 12}" in out
    )
    doc["build"] = {"in_image": False, "note": "trained outside an image (no /opt/x)"}
    store.write_bytes(key, json.dumps(doc).encode())
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1",
                       "--json-output")  # fmt: skip
    assert json.loads(out)["build"]["note"] == "trained outside an image (no /opt/x)"


def test_show_says_what_the_run_trained_on(output, capsys):
    from trainer import distribute

    store = open_store(output)
    key = contract.run_key("mean", "r1", contract.CONFIG)
    doc = json.loads(store.read_bytes(key))
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1")
    assert "trained on     unknown (a run from before devices" in out
    doc["devices"] = distribute.devices()  # what TensorFlow reports here: no GPU, a CPU build
    store.write_bytes(key, json.dumps(doc).encode())
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1")
    assert code == 0
    assert "trained on     GPUs none; driver none; TensorFlow built without CUDA" in out
    doc["devices"] = {"gpus": ["NVIDIA L4"], "cuda_build": True, "cuda_version": "12.5.1",
                      "cudnn_version": "9", "driver_version": "550.90.07"}  # fmt: skip
    store.write_bytes(key, json.dumps(doc).encode())
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "mean", "--run-id", "r1")
    assert "trained on     GPUs NVIDIA L4; driver 550.90.07; CUDA 12.5.1, cuDNN 9" in out


def test_compare_shows_the_cost_beside_the_accuracy(output, capsys):
    from trainer.cost import run_cost

    store = open_store(output)
    key = contract.run_key("lstm", "r1", contract.METRICS)
    metrics = json.loads(store.read_bytes(key))
    marks = {"started": 100.0, "data_loaded": 110.0, "trained": 160.0, "tested": 170.0}
    env = {contract.GPUS_ENV: "2", contract.NODE_NAME_ENV: "gke-gpu-1",
           contract.NODE_ACCELERATOR_ENV: "nvidia-l4", contract.NODE_SPOT_ENV: "true"}  # fmt: skip
    metrics["cost"] = run_cost(marks, env)
    store.write_bytes(key, json.dumps(metrics).encode())
    code, out, _ = cli(capsys, "compare", "lstm/r1", "lstm/latest", "--output", output)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.strip()}
    assert rows["test_accuracy"] == ["0.8610", "0.8740"]
    assert rows["pod_seconds"] == ["70.0", "-"] and rows["gpu_seconds"] == ["140.0", "-"]
    assert rows["node"] == ["gke-gpu-1", "-"] and rows["spot"] == ["True", "-"]
    code, out, _ = cli(capsys, "show", "--output", output, "--model", "lstm", "--run-id", "r1")
    assert "cost           70.0 pod-s, 140.0 GPU-s on gke-gpu-1 (nvidia-l4, Spot)" in out
