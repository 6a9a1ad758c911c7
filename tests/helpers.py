"""Test helpers, one import root (`tests.helpers`): paths, the trainer as a subprocess,
jobs.submit --dry-run, a GCS client for the emulator, tiny corpora and npz files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import yaml

from cluster.controlplane import free_ports  # noqa: F401 (the tests' one helper for ports)
from trainer import contract

ROOT = Path(__file__).resolve().parent.parent
SHARED_TARBALL = ROOT.parent / "shared" / "data" / "aclImdb_v1_labelled.tar.gz"


def shared_dir(tmp_path_factory, name: str, build) -> Path:
    """A folder of this test session, built once by `build(folder)` for every worker process
    (pytest-xdist): the first to ask builds it under a lock, the others wait and reuse it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the session's workers
    folder, ready = root / name, root / f"{name}.ready"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            ready.touch()
    return folder


def trainer_env(**extra: str) -> dict:
    """The environment of a trainer subprocess: no progress bars, this checkout first, and a
    short run lease, so a rerun after a SIGKILL takes the dead trainer's lease over in
    seconds instead of a minute."""
    return {
        **os.environ,
        contract.PROGRESS_ENV: "0",
        contract.LEASE_SECONDS_ENV: "6",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def trainer_args(**settings) -> list[str]:
    """`python -m trainer`'s arguments for TrainConfig settings, the one way the tests build
    them: trainer_args(model="mean", run_id="r1", neighbours=("great", "bad")) ->
    ["--model", "mean", "--run-id", "r1", "--neighbours", "great,bad"]. A name that is not a
    TrainConfig field fails here, not as a trainer's exit 2 mistaken for the one tested."""
    import dataclasses

    from trainer.commandline import flag
    from trainer.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: list[str] = []
    for name, value in settings.items():
        if name not in fields:
            raise KeyError(f"{name!r} is not a TrainConfig setting")
        text = ",".join(value) if isinstance(value, list | tuple) else str(value)
        out += [flag(name), text]
    return out


def run_trainer(args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=trainer_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def signal_in_epoch_2(
    args: list[str], sig: int, delay: float = 0.3, **env: str
) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS`, sent `sig` `delay` s after epoch 1's checkpoint (inside
    epoch 2), then run to its end; stdout and stderr as text, and in `.seconds` the time
    from the signal to the exit."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=trainer_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout, sent = [], None
    try:
        for line in proc.stdout:
            stdout.append(line)
            if line.startswith("checkpoint: epoch 1 saved"):
                time.sleep(delay)
                proc.send_signal(sig)
                sent = time.monotonic()
                break
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(stdout) + out, err)
    done.seconds = time.monotonic() - sent if sent is not None else None
    return done


def final_iterations(run: Path) -> int:
    """The optimizer's step counter in a run's published model.keras: a resume that did not
    restore the checkpoint's optimizer counts fewer steps than the epochs took."""
    import zipfile

    import h5py

    with (
        zipfile.ZipFile(run / contract.MODEL_FILE) as z,
        z.open("model.weights.h5") as f,
        h5py.File(f) as h5,
    ):
        return int(h5["optimizer/vars/0"][()])


def seed_good_run(out: Path, model: str = "mean", run_id: str = "good") -> None:
    """An earlier finished, promoted run as files (the trainer's layout, not its training)."""
    run = out / contract.run_key(model, run_id)
    run.mkdir(parents=True)
    (run / contract.CONFIG).write_text(json.dumps({"model": model}))
    (run / contract.METRICS).write_text(json.dumps({"test_accuracy": 0.8, "epochs_completed": 1}))
    (run / contract.SUCCESS).write_text("")
    pointer = {"run_id": run_id, "test_accuracy": 0.8}
    (out / model / contract.LATEST).write_text(json.dumps(pointer))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): equal snapshots mean nothing changed."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def dry_run(capsys, *argv: str) -> list[dict]:
    """The objects `jobs.submit --dry-run ARGV` prints (the example image and bucket unless
    ARGV names its own)."""
    from jobs import submit
    from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT

    required = [
        arg
        for flag, value in (("--image", EXAMPLE_IMAGE), ("--output", EXAMPLE_OUTPUT))
        if flag not in argv
        for arg in (flag, value)
    ]
    capsys.readouterr()
    assert submit.main(["--dry-run", *required, *argv]) == 0
    return [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]


def gcs_client(url: str):
    """The real google-cloud-storage client, pointed at the emulator at `url`."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="imdb-train-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


# A tiny hand-written corpus: (split, label, id, text).
TINY = [
    ("train", "pos", 0, b"Great movie, great acting!"),
    ("train", "pos", 1, b"A great<br />great film."),
    ("train", "neg", 0, b"Bad movie. Bad, bad acting."),
    ("train", "neg", 1, b"Boring film; it's bad."),
    ("test", "pos", 0, b"Great fun"),
    ("test", "neg", 0, b"So boring and bad"),
]


def review_files(reviews=TINY):
    for split, label, rid, text in reviews:
        yield f"aclImdb/{split}/{label}/{rid}_{7 if label == 'pos' else 2}.txt", text


def write_tarball(
    path: Path, reviews=TINY, compress: bool = True, fmt: int = tarfile.USTAR_FORMAT
) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w", format=fmt) as tf:
        for name, text in review_files(reviews):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text))
    return path


def write_tree(root: Path, reviews=TINY) -> Path:
    for name, text in review_files(reviews):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    return root / "aclImdb"


def write_keras_npz(path: Path, splits: dict, word_index: dict | None = None) -> Path:
    """splits: {"x_train": [[rank, ...], ...], "y_train": [...], ...} (1-based ranks)."""
    arrays = {}
    for key, value in splits.items():
        if key.startswith("x_"):
            arr = np.empty(len(value), dtype=object)
            arr[:] = [list(v) for v in value]
            arrays[key] = arr
        else:
            arrays[key] = np.asarray(value)
    np.savez(path, **arrays)
    if word_index is not None:
        path.with_name("imdb_word_index.json").write_text(json.dumps(word_index))
    return path


def small_tarball(path: Path, per_class: int, source: Path = SHARED_TARBALL) -> Path:
    """The first `per_class` reviews of each split and label of the aclImdb tarball, as a
    tarball of the same layout: real reviews that encode in a second, for cluster runs."""
    import tarfile as tarfile_

    wanted = {(s, lab): per_class for s in ("train", "test") for lab in ("pos", "neg")}
    with tarfile_.open(source) as src, tarfile_.open(path, "w:gz") as dst:
        for member in src:
            parts = member.name.split("/")
            key = tuple(parts[-3:-1])
            if not member.isfile() or wanted.get(key, 0) <= 0:
                continue
            wanted[key] -= 1
            dst.addfile(member, src.extractfile(member))
            if not any(wanted.values()):
                break
    return path
