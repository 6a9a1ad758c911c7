"""Reliability: bad input is rejected cleanly, kills resume, promotion is atomic,
storage faults never leave a run that looks complete."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.faultproxy import FaultProxy
from tests.helpers import (
    TINY,
    final_iterations,
    gcs_client,
    run_trainer,
    signal_in_epoch_2,
    trainer_args,
    write_keras_npz,
    write_tarball,
)
from trainer import contract
from trainer.config import TrainConfig
from trainer.contract import EXIT_BAD_INPUT, EXIT_PREEMPTED, LATEST, METRICS, SUCCESS
from trainer.promotion import promote
from trainer.storage import AlreadyExistsError, open_store


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- bad input


def _corrupt(tmp: Path) -> str:
    path = tmp / "corrupt.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    return str(path)


def _truncated_gz(tmp: Path) -> str:
    whole = write_tarball(tmp / "whole.tar.gz").read_bytes()
    path = tmp / "truncated.tar.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return str(path)


def _truncated_tar(tmp: Path) -> str:
    whole = write_tarball(tmp / "whole.tar", compress=False).read_bytes()
    path = tmp / "truncated.tar"
    path.write_bytes(whole[: 512 * 3 + 100])
    return str(path)


def _npz_missing(tmp: Path) -> str:
    return str(write_keras_npz(tmp / "partial.npz", {"x_train": [[1, 2]], "y_train": [1]}))


def _single_class(tmp: Path) -> str:
    return str(write_tarball(tmp / "pos-only.tar.gz", [r for r in TINY if r[1] == "pos"]))


def _no_reviews(tmp: Path) -> str:
    import io
    import tarfile

    path = tmp / "empty.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("aclImdb/README")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return str(path)


BAD_INPUTS = [
    ("unknown-model", ["--model", "cnn"], None, "unknown model 'cnn': expected one of mean, lstm"),
    ("zero-epochs", ["--epochs", "0"], None, "invalid epochs 0: expected a positive integer"),
    (
        "negative-batch",
        ["--batch-size", "-64"],
        None,
        "invalid batch-size -64: expected a positive integer",
    ),
    (
        "zero-vocabulary",
        ["--vocab-size", "0"],
        None,
        "invalid vocab-size 0: expected a positive integer",
    ),
    (
        "zero-review-length",
        ["--max-review-length", "0"],
        None,
        "invalid max-review-length 0: expected a positive integer",
    ),
    ("missing-data", ["--data", "{tmp}/nope.tar.gz"], None, "nope.tar.gz' does not exist"),
    ("corrupt-tarball", ["--data", _corrupt], None, "corrupt or truncated tarball"),
    ("truncated-gzip", ["--data", _truncated_gz], None, "corrupt or truncated tarball"),
    ("truncated-tar", ["--data", _truncated_tar], None, "truncated tarball"),
    (
        "npz-missing-arrays",
        ["--data", _npz_missing],
        None,
        "lacks arrays x_test, y_test: expected x_train, y_train, x_test, y_test",
    ),
    (
        "single-class",
        ["--data", _single_class],
        None,
        "train split has labels [1]: expected both 0 and 1",
    ),
    ("no-reviews", ["--data", _no_reviews], None, "no train/test reviews in"),
    (
        "unknown-scheme",
        ["--output", "s3://bucket/imdb"],
        None,
        "unknown output scheme 's3' in 's3://bucket/imdb'",
    ),
    (
        "invalid-bucket",
        ["--output", "gs://Not_A_Bucket!/imdb"],
        None,
        "invalid bucket name 'Not_A_Bucket!'",
    ),
    (
        "bad-metric",
        ["--metric", "manhattan"],
        None,
        "unknown metric 'manhattan': expected one of euclidean, cosine",
    ),
    ("bad-run-id", ["--run-id", "../escape"], None, "invalid run-id '../escape'"),
    (
        "seed-beyond-32-bits",
        ["--seed", str(2**32)],
        None,
        "invalid seed 4294967296: expected at most 4294967295",
    ),
    (
        "huge-review-length",
        ["--max-review-length", str(10**9)],
        None,
        "invalid max-review-length 1000000000: expected at most 10000",
    ),
    (
        "huge-vocabulary",
        ["--vocab-size", str(10**9)],
        None,
        "invalid vocab-size 1000000000: expected at most 1000000",
    ),
    (
        "huge-embedding",
        ["--embedding-dim", "100000"],
        None,
        "invalid embedding-dim 100000: expected at most 4096",
    ),
    ("run-id-newline", ["--run-id", "r1\n"], None, "invalid run-id 'r1\\n'"),
    ("misspelt-flag", ["--epoch", "1"], None, "unknown flag --epoch: expected one of --model"),
    ("unknown-flag", ["--no-promote", "true"], None, "unknown flag --no-promote"),
    ("bad-boolean", ["--promote", "maybe"], None, "invalid --promote 'maybe'"),
    ("epochs-with-text", ["--epochs", "1 extra"], None, "invalid epochs '1 extra'"),
    ("k-beyond-vocabulary", ["--k", "100000"], None, "invalid k 100000: expected at most 4997"),
    (
        "one-word-reviews",
        ["--max-review-length", "1"],
        None,
        "invalid max-review-length 1: expected at least 5",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "message"), [pytest.param(a, e, m, id=i) for i, a, e, m in BAD_INPUTS]
)
def test_bad_input_one_line_permanent_exit_nothing_published(args, env, message, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    args = [a(src) if callable(a) else a.replace("{tmp}", str(src)) for a in args]
    out = tmp_path / "out"
    options = {
        "--model": "mean",
        "--data": str(write_tarball(src / "ok.tar.gz")),
        "--output": str(out),
        "--run-id": "bad",
        "--epochs": "1",
        "--cache-dir": str(tmp_path / "cache"),
    }
    options.update(zip(args[::2], args[1::2], strict=True))
    full = [part for item in options.items() for part in item]
    started = time.monotonic()
    proc = run_trainer(full, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert time.monotonic() - started < 60  # bounded retries, no hang


@pytest.mark.parametrize("which", ["output", "data"])
def test_an_unreachable_store_at_start_up_is_an_outage_not_bad_input(which, tmp_path):
    """Exit 75 (the Job retries), not 2 (FailJob): a store outage while the pod starts is
    transient like one mid-run. Bounded retries, one line, nothing written."""
    out = tmp_path / "out"
    data = str(write_tarball(tmp_path / "ok.tar.gz"))
    if which == "output":
        output, where = "gs://imdb-unreachable/imdb", "gs://imdb-unreachable/imdb/"
    else:
        output, data, where = str(out), "gs://imdb-unreachable/data/x.tar.gz", "gs://imdb-unr"
    started = time.monotonic()
    proc = run_trainer(
        ["--model", "mean", "--data", data, "--output", output, "--run-id", "outage",
         "--epochs", "1", "--cache-dir", str(tmp_path / "cache")],
        timeout=120,
        STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{closed_port()}",
        IMDB_TRAIN_GCS_DEADLINE="2",
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("stopped, resumable: "), proc.stderr
    assert "cannot reach " + where in lines[0], lines[0]
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert time.monotonic() - started < 60


def test_resuming_a_run_with_other_settings_is_refused(tmp_path):
    src = write_tarball(tmp_path / "tiny.tar.gz")
    common = [
        "--model",
        "mean",
        "--data",
        str(src),
        "--output",
        str(tmp_path / "out"),
        "--run-id",
        "r1",
        "--cache-dir",
        str(tmp_path / "c"),
        "--vocab-size",
        "20",
        "--max-review-length",
        "8",
    ]
    assert run_trainer([*common, "--epochs", "1"]).returncode == 0
    proc = run_trainer([*common, "--epochs", "1", "--embedding-dim", "8"])
    assert proc.returncode == EXIT_BAD_INPUT
    assert "embedding_dim: 32 -> 8" in proc.stderr and "pass another --run-id" in proc.stderr


@pytest.mark.parametrize(
    "damage",
    [b'{"config": {"model": "me', b"[1, 2]", b'{"config": [1]}', b"\xff\xfe", b"[" * 100_000],
    ids=["truncated", "a-list", "config-not-an-object", "not-utf8", "nested-100k-deep"],
)
def test_a_damaged_config_of_the_same_run_id_is_one_line_not_a_traceback(tmp_path, damage):
    from trainer.config import ConfigError
    from trainer.train import check_resumable

    store = open_store(str(tmp_path / "out")).child("mean").child("r1")
    store.write_bytes("config.json", damage)
    with pytest.raises(
        ConfigError, match=r"config.json is (damaged|not a run config).*another --run-id"
    ):
        check_resumable(store, TrainConfig(model="mean", run_id="r1"))


# ----------------------------------------------------------------------------- kills


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"),
    [
        pytest.param(signal.SIGTERM, EXIT_PREEMPTED, id="sigterm"),
        pytest.param(signal.SIGKILL, -signal.SIGKILL, id="sigkill"),
    ],
)
def test_kill_in_epoch_2_then_resume(sig, code, shared_tarball, warm_cache, tmp_path):
    out = tmp_path / "runs"
    args = trainer_args(
        model="lstm", data=shared_tarball, output=out, run_id="kill", epochs=2, sample=3000,
        cache_dir=warm_cache, neighbours="great",
    )  # fmt: skip
    first = signal_in_epoch_2(args, sig)
    assert first.returncode == code, first.stderr[-3000:]
    run = open_store(str(out)).child("lstm", "kill")
    keys = set(run.list())
    steps = -(-3000 // 64)
    assert "checkpoints/epoch-0001.keras" in keys
    assert "checkpoints/epoch-0002.keras" not in keys  # the partial epoch is not complete
    assert SUCCESS not in keys and "metrics.json" not in keys
    cut = sorted(k for k in keys if contract.in_epoch_position(k))
    if sig == signal.SIGTERM:
        # SIGTERM: checkpointed where epoch 2 stopped; SIGKILL: nothing after epoch 1.
        assert len(cut) == 1, keys
        step = contract.in_epoch_position(cut[0])[1]
        assert 0 < step < steps, cut
        assert (
            f"stopped, resumable: stopped by signal 15 in epoch 2 of 2 after step {step} "
            f"of {steps} (checkpointed)"
        ) in first.stderr
    else:
        assert cut == [], cut

    second = run_trainer(args, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    if sig == signal.SIGTERM:
        assert f"resuming run kill in epoch 2 of 2 from step {step} of {steps}" in second.stdout
        # Superseded by epoch 2's own checkpoint: removed.
        assert not [k for k in run.list() if contract.is_in_epoch_key(k)]
    else:
        assert "resuming run kill after epoch 1 of 2" in second.stdout
    metrics = json.loads(run.read_bytes("metrics.json"))
    assert metrics["epochs_completed"] == 2
    assert len(metrics["history"]["val_accuracy"]) == len(metrics["epoch_seconds"]) == 2
    assert run.exists(SUCCESS)
    assert metrics["test_accuracy"] > 0.6  # it really trained on after resuming
    # The resume restored the checkpoint's optimizer: its step counter went on from there.
    assert final_iterations(out / "lstm" / "kill") == 2 * steps
    # The cost counts the restart and the part of epoch 2 the first trainer lost.
    assert metrics["cost"]["restarts"] == 1
    assert 0 < metrics["cost"]["redone_seconds"] < 300


# ----------------------------------------------------------------------------- promotion


@pytest.fixture(params=["local", "gcs"])
def model_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "runs")).child("lstm")
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/imdb").child("lstm")


def _promote(store, run_id, acc, **gate):
    cfg = TrainConfig(model="lstm", run_id=run_id, **gate)
    return promote(cfg, {"test_accuracy": acc, "test_loss": 0.3}, store)


def test_quality_gate(model_store):
    assert _promote(model_store, "a", 0.840).promoted
    assert _promote(model_store, "b", 0.850).promoted
    worse = _promote(model_store, "c", 0.840, tolerance=0.005)
    assert not worse.promoted
    assert "worse than latest run b (0.8500) by the tolerance 0.0050 or more" in worse.reason
    assert _promote(model_store, "d", 0.846, tolerance=0.005).promoted  # within tolerance
    tie = _promote(model_store, "t", 0.846, tolerance=0.0)
    assert not tie.promoted and "a tie keeps the latest" in tie.reason
    floor = _promote(model_store, "e", 0.90, min_accuracy=0.95)
    assert not floor.promoted and "below the floor 0.9500" in floor.reason
    latest = json.loads(model_store.read_bytes(LATEST))
    assert latest["run_id"] == "d" and latest["previous_run_id"] == "b"


def test_the_floor_is_exact_and_no_tolerance_softens_it(model_store):
    """--min-accuracy is "at least": exactly at the floor is promoted; just below it is not,
    whatever the tolerance (which only compares with the current latest)."""
    at = _promote(model_store, "at", 0.80, min_accuracy=0.80)
    assert at.promoted, at
    below = _promote(model_store, "below", 0.7999, min_accuracy=0.80)
    assert not below.promoted and "below the floor 0.8000" in below.reason
    for tolerance in (0.005, 0.5):  # the default, and a loose one
        soft = _promote(model_store, f"t{int(tolerance * 1000)}", 0.7999, min_accuracy=0.80,
                        tolerance=tolerance)  # fmt: skip
        assert not soft.promoted and "below the floor" in soft.reason


def test_a_latest_json_that_is_a_directory_is_named_every_time(tmp_path):
    """Not "no latest" (the gate would promote, then fail to write: exit 75, then 2 on the
    rerun): the same one line, a permanent StoreError (exit 2), on every attempt."""
    from trainer.storage import StoreError

    store = open_store(str(tmp_path / "runs")).child("lstm")
    (tmp_path / "runs" / "lstm" / LATEST).mkdir(parents=True)
    for _ in range(2):
        with pytest.raises(StoreError, match="latest.json is a directory, not a file"):
            _promote(store, "a", 0.84)


def test_the_tolerance_boundary_against_the_latest(model_store):
    """Worse than the latest by exactly the tolerance is refused ("or more"); by less, kept."""
    assert _promote(model_store, "base", 0.850).promoted
    edge = _promote(model_store, "edge", 0.845, tolerance=0.005)
    assert not edge.promoted and "by the tolerance 0.0050 or more" in edge.reason
    assert _promote(model_store, "inside", 0.8451, tolerance=0.005).promoted


def test_a_diverged_loss_stops_with_its_own_exit_never_checkpointed_or_promoted(tmp_path):
    """A learning rate the model cannot take: the loss becomes NaN. The run stops after that
    epoch with one line and exit 3 (FailJob, never a crash loop), checkpoints and promotes
    nothing, and a rerun of the run id ends the same way, not in a traceback."""
    from trainer.contract import CHECKPOINT_DIR, EXIT_DIVERGED

    out = tmp_path / "out"
    args = ["--model", "mean", "--data", str(write_tarball(tmp_path / "ok.tar.gz")),
            "--output", str(out), "--run-id", "nan", "--epochs", "2",
            "--learning-rate", "1e30", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    for attempt in ("first", "rerun"):
        proc = run_trainer(args, timeout=180)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == EXIT_DIVERGED, (attempt, proc.stderr[-2000:])
        assert len(errors) == 1 and "training diverged" in errors[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        run = out / "mean" / "nan"
        assert not (run / CHECKPOINT_DIR).exists() or not any((run / CHECKPOINT_DIR).iterdir())
        assert not (run / SUCCESS).exists() and not (out / "mean" / LATEST).exists()


def test_concurrent_publishers_lose_no_update(model_store):
    """Twelve publishers race with distinct accuracies and tolerance 0: the best ends
    up latest, and every publisher told it won is on the pointer's history chain."""
    rng = np.random.default_rng(7)
    accs = {f"run-{i:02d}": float(a) for i, a in enumerate(rng.permutation(12) / 100 + 0.8)}
    results = {}

    def publish(run_id):
        results[run_id] = _promote(model_store, run_id, accs[run_id], tolerance=0.0)

    threads = [threading.Thread(target=publish, args=(r,)) for r in accs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = {r for r, d in results.items() if d.promoted}
    latest = json.loads(model_store.read_bytes(LATEST))
    assert latest["run_id"] == max(accs, key=accs.get)
    # Every successful CAS replaced the previous winner: following previous_run_id from
    # the final pointer must visit exactly the winners (a lost update would break it).
    previous = {r: results[r].previous for r in winners}
    chain, current = [], latest["run_id"]
    while current:
        chain.append(current)
        current = (previous[current] or {}).get("run_id")
    assert set(chain) == winners and len(chain) == len(winners)
    accuracies = [accs[r] for r in reversed(chain)]
    assert accuracies == sorted(accuracies)


# ----------------------------------------------------------------------------- storage faults


@pytest.mark.parametrize(
    ("fault", "rival", "ours"),
    [
        pytest.param("lost-response", False, True, id="landed-answer-lost"),
        # Landed, then a competitor replaced it before our retry: the retry's 412 is not ours.
        pytest.param("lost-response", True, False, id="landed-then-replaced"),
        # Never landed; a competitor wrote first: the retry's 412 is theirs.
        pytest.param("reset", True, False, id="lost-then-rival-wins"),
    ],
)
def test_lost_responses_on_conditional_writes_are_read_back(
    gcs_bucket, gcs_emulator, monkeypatch, fault, rival, ours
):
    uploads = lambda method, path, body: method == "POST" and "/upload/" in path  # noqa: E731
    direct = gcs_client(gcs_emulator).bucket(gcs_bucket)
    target = {}

    def competitor(_fault):  # runs between our lost attempt and our retry
        if rival:
            direct.blob(f"imdb/{target['key']}").upload_from_string(b"rival")

    with FaultProxy(gcs_emulator, applies=uploads) as proxy:
        proxy.on_fault = competitor
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        store = open_store(f"gs://{gcs_bucket}/imdb")
        # Create-only (_SUCCESS).
        target["key"], proxy.script = "run/_SUCCESS", [fault]
        if ours:
            store.write_bytes("run/_SUCCESS", b"ok", if_absent=True)
        else:
            with pytest.raises(AlreadyExistsError):
                store.write_bytes("run/_SUCCESS", b"ok", if_absent=True)
        # Compare-and-swap from absent, then from a version (latest.json).
        target["key"], proxy.script = "latest.json", [fault]
        assert store.write_versioned("latest.json", b'{"run_id": "x"}', None) is ours
        _, version = store.read_versioned("latest.json")
        proxy.script = [fault]
        assert store.write_versioned("latest.json", b'{"run_id": "y"}', version) is ours
        assert not store.write_versioned("latest.json", b'{"run_id": "z"}', version)
        assert store.read_bytes("run/_SUCCESS") == (b"ok" if ours else b"rival")
        assert store.read_bytes("latest.json") == (b'{"run_id": "y"}' if ours else b"rival")
        # A 503 is never ambiguous: retried, and the write is ours.
        _, version = store.read_versioned("latest.json")
        proxy.script = ["503"]
        assert store.write_versioned("latest.json", b'{"run_id": "w"}', version)
        assert proxy.counts[fault] == 3 and proxy.counts["503"] == 1
    assert store.read_bytes("latest.json") == b'{"run_id": "w"}'


@pytest.mark.slow
def test_training_through_a_faulty_link_completes(
    shared_tarball, warm_cache, gcs_bucket, gcs_emulator
):
    """A fifth of all storage requests fail (503 or reset): retries carry the run."""
    with FaultProxy(gcs_emulator, rate=0.2, faults=("503", "reset"), seed=3) as proxy:
        proc = run_trainer(
            [
                "--model",
                "mean",
                "--data",
                str(shared_tarball),
                "--output",
                f"gs://{gcs_bucket}/imdb",
                "--run-id",
                "flaky",
                "--epochs",
                "2",
                "--sample",
                "512",
                "--cache-dir",
                str(warm_cache),
            ],
            STORAGE_EMULATOR_HOST=proxy.url,
            IMDB_TRAIN_GCS_DEADLINE="60",
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.injected >= 5, proxy.counts
    run = open_store(f"gs://{gcs_bucket}/imdb").child("mean", "flaky")
    keys = set(run.list())
    for key in (
        "metrics.json",
        "neighbours.json",
        "model.keras",
        "curves.png",
        SUCCESS,
        "checkpoints/epoch-0002.keras",
    ):
        assert key in keys
    assert json.loads(run.read_bytes("metrics.json"))["epochs_completed"] == 2


@pytest.mark.slow
def test_store_outage_mid_run_is_retryable_and_never_looks_complete(
    shared_tarball, warm_cache, gcs_bucket, gcs_emulator
):
    """Every request fails once the second checkpoint is being written: the run stops with
    the retryable code and no _SUCCESS; after the outage a rerun resumes from the first
    checkpoint (epoch 1 is not trained again) and finishes it."""
    broken = threading.Event()

    def applies(method, path, body):
        if b"state-0002.json" in body:  # the object name travels in the upload's metadata
            broken.set()
        return broken.is_set()

    args = trainer_args(
        model="mean", data=shared_tarball, output=f"gs://{gcs_bucket}/imdb", run_id="outage",
        epochs=3, sample=512, cache_dir=warm_cache,
    )  # fmt: skip
    with FaultProxy(gcs_emulator, rate=1.0, faults=("503", "reset"), applies=applies) as proxy:
        proc = run_trainer(args, STORAGE_EMULATOR_HOST=proxy.url, IMDB_TRAIN_GCS_DEADLINE="3")
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-3000:]
    assert "rerun with --run-id outage to resume" in proc.stderr
    assert proxy.injected > 0
    run = open_store(f"gs://{gcs_bucket}/imdb").child("mean", "outage")
    assert not run.exists(SUCCESS) and not run.exists("metrics.json")
    again = run_trainer(args, STORAGE_EMULATOR_HOST=gcs_emulator)
    assert again.returncode == 0, again.stderr[-3000:]
    assert run.exists(SUCCESS)
    assert "resuming run outage after epoch 1 of 3" in again.stdout
    trained = [line.split()[1] for line in again.stdout.splitlines() if line.startswith("epoch ")]
    assert trained == ["2/3", "3/3"], again.stdout
    assert json.loads(run.read_bytes(METRICS))["epochs_completed"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("phase", [p for p in __import__("trainer.phases").phases.ORDER
                                   if p != "started"])  # fmt: skip
def test_a_signal_at_every_phase_is_a_preemption_and_the_rerun_completes(phase, tmp_path):
    """A SIGTERM as each phase of the trainer ends (trainer.phases: TensorFlow imported, data
    loaded, strategy ready, model ready, trained, tested, i.e. publishing starts) is a
    preemption: exit 75 and no _SUCCESS (or, once only publishing is left, a whole run),
    never 2 or a traceback; the same run id then completes."""
    from trainer.contract import SIGNAL_AT_ENV

    out = tmp_path / "out"
    args = ["--model", "mean", "--data", str(write_tarball(tmp_path / "ok.tar.gz")),
            "--output", str(out), "--run-id", "sig", "--epochs", "1",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    proc = run_trainer(args, timeout=180, **{SIGNAL_AT_ENV: phase})
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr[-2000:]
    if phase in ("trained", "tested"):
        # Nothing is left but publishing, which finishes within the grace period: the run
        # completes whole (exit 0), or stops resumable before _SUCCESS (75).
        assert proc.returncode in (0, EXIT_PREEMPTED), (phase, proc.stderr[-2000:])
        assert (out / "mean" / "sig" / SUCCESS).exists() == (proc.returncode == 0)
    else:
        assert proc.returncode == EXIT_PREEMPTED, (phase, proc.stderr[-2000:])
        assert not (out / "mean" / "sig" / SUCCESS).exists()
    again = run_trainer(args, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "mean" / "sig" / SUCCESS).exists()
