"""Multi-worker training end to end: real `python -m trainer` processes on 127.0.0.1.

Each test starts a group of workers that share one store (the same --output, as pods
share a bucket) and differ only in TF_CONFIG. The workers run under a small wrapper that
records, through a Python audit hook, every path a process opens for writing, renames,
links or creates under the store: that is how the tests tell who wrote what although
everyone has the same --output.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import free_ports, write_tarball
from trainer import contract

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EPOCH_SECONDS = 120  # generous: the machine is shared and TF start-up is CPU-heavy
GROUP_TIMEOUT = 240
VOCAB, MAXLEN = 5000, 100
# Reviews per split: 128 steps of 16 per epoch, so a signal sent after epoch 1 lands in
# epoch 2 with about a second to spare even at several steps per compiled call.
CORPUS = 2048

# Runs `python -m trainer` with an audit hook that logs writes under MW_AUDIT_ROOT, and
# optionally blocks forever (a peer that is alive but stuck) once MW_HANG_ON is written, or
# sends itself SIGTERM once MW_SIGNAL_ON is (a signal at a chosen point of the run).
WRAPPER = r"""
import os, runpy, signal, sys, time
log = open(os.environ["MW_AUDIT_LOG"], "a", buffering=1)
root = os.path.abspath(os.environ["MW_AUDIT_ROOT"])
hang_on = os.environ.get("MW_HANG_ON")
signal_on = [os.environ.get("MW_SIGNAL_ON")]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
TARGETS = {"os.rename": 1, "os.link": 1, "os.symlink": 1, "shutil.copyfile": 1,
           "os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "os.truncate": 0, "os.chmod": 0}

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not ((mode and set(str(mode)) & set("wax+")) or (flags or 0) & WRITE):
            return
    elif event in TARGETS:
        path = args[TARGETS[event]]
    else:
        return
    if isinstance(path, int):
        return
    path = os.path.abspath(os.fsdecode(path))
    if signal_on[0] and signal_on[0] in os.path.basename(path):
        signal_on[0] = None
        log.write(f"signal\t{path}\n")
        os.kill(os.getpid(), signal.SIGTERM)
    if hang_on and path.endswith(hang_on):
        log.write(f"hang\t{path}\n")
        while True:
            time.sleep(60)
    if path == root or path.startswith(root + os.sep):
        log.write(f"{event}\t{path}\n")

sys.addaudithook(hook)
runpy.run_module("trainer", run_name="__main__", alter_sys=True)
"""


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


class Group:
    """N worker processes of one run, each in its own process group, logs in `workdir`."""

    def __init__(self, workdir: Path, n: int, args: list[str], env: dict | None = None):
        self.workdir, self.n, self.args, self.env = workdir, n, args, env or {}
        self.procs: list[subprocess.Popen] = []
        self.launches = 0

    def log(self, i: int) -> Path:
        return self.workdir / f"worker-{i}.launch-{self.launches}.log"

    def audit(self, i: int) -> Path:
        return self.workdir / f"worker-{i}.audit"

    def start(self, store: Path, per_worker_env: dict[int, dict] | None = None) -> None:
        assert not self.procs, "previous launch still tracked"
        self.launches += 1
        ports = free_ports(self.n)
        for i in range(self.n):
            tmp = self.workdir / f"tmp-{i}"
            tmp.mkdir(exist_ok=True)
            env = {
                **os.environ,
                "TF_CONFIG": tf_config(ports, i),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                contract.PROGRESS_ENV: "0",
                "TMPDIR": str(tmp),  # a SIGKILLed worker leaves its work dir here
                "PYTHONPATH": str(ROOT),
                "MW_AUDIT_LOG": str(self.audit(i)),
                "MW_AUDIT_ROOT": str(store),
                **self.env,
                **(per_worker_env or {}).get(i, {}),
            }
            env.pop("TF_USE_LEGACY_KERAS", None)  # the trainer must choose it itself
            with open(self.log(i), "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", WRAPPER, *self.args],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def wait(self, timeout: float, which: list[int] | None = None) -> dict[int, int]:
        """Exit codes of the workers in `which` (default all); fails the test on timeout."""
        deadline = time.monotonic() + timeout
        codes = {}
        for i in which if which is not None else range(self.n):
            try:
                codes[i] = self.procs[i].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"worker {i} still running after {timeout}s:\n{self.tails()}")
        return codes

    def run(
        self, store: Path, timeout: float = GROUP_TIMEOUT, per_worker_env: dict | None = None
    ) -> dict[int, int]:
        """Start the group, wait for every worker, and leave none behind: the exit codes."""
        try:
            self.start(store, per_worker_env)
            return self.wait(timeout)
        finally:
            self.kill()

    def kill(self, which: list[int] | None = None) -> None:
        for i, p in enumerate(self.procs):
            if (which is None or i in which) and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for i, p in enumerate(self.procs):
            if which is None or i in which:
                p.wait(timeout=30)
        if which is None:
            self.procs = []

    def output(self, i: int) -> str:
        return self.log(i).read_text(errors="replace")

    def tails(self) -> str:
        return "\n".join(
            f"--- worker {i}:\n" + "\n".join(self.output(i).splitlines()[-25:])
            for i in range(self.n)
        )

    def writes(self, i: int) -> set[str]:
        """Absolute paths worker i wrote under the store, over all launches."""
        if not self.audit(i).exists():
            return set()
        return {line.split("\t", 1)[1] for line in self.audit(i).read_text().splitlines()}


def final_line(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("final: ")]
    assert len(lines) == 1, f"expected one 'final:' line, got {lines}"
    return json.loads(lines[0][len("final: ") :])


def store_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A small learnable aclImdb tarball and a cache already holding its encoding, so the
    workers of a group do not race to encode it."""
    from trainer import data

    base = tmp_path_factory.mktemp("corpus")
    rng = random.Random(5)
    good = ["great", "excellent", "wonderful", "amazing", "best"]
    bad = ["bad", "boring", "awful", "worst", "poor"]
    filler = [f"word{i}" for i in range(100)]
    reviews = []
    for split in ("train", "test"):
        for i in range(CORPUS):
            label = "pos" if i % 2 else "neg"
            words = rng.choices(filler, k=12) + rng.choices(good if i % 2 else bad, k=4)
            rng.shuffle(words)
            reviews.append((split, label, i, " ".join(words).encode()))
    tarball = write_tarball(base / "reviews.tar.gz", reviews)
    cache = base / "cache"
    data.load(str(tarball), VOCAB, MAXLEN, 0, cache)
    return tarball, cache


def trainer_args(corpus, store: Path, run_id: str, epochs: int, sample: int) -> list[str]:
    tarball, cache = corpus
    return helpers.trainer_args(
        model="mean", data=tarball, output=store, run_id=run_id, cache_dir=cache,
        sample=sample, epochs=epochs, batch_size=16, learning_rate=0.02, vocab_size=VOCAB,
        max_review_length=MAXLEN, neighbours="great",
    )  # fmt: skip


def wait_for(path: Path, group: Group, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in group.procs):
            group.kill()
            pytest.fail(f"a worker exited before {path.name} appeared:\n{group.tails()}")
        if time.monotonic() > deadline:
            group.kill()
            pytest.fail(f"{path.name} did not appear within {timeout}s:\n{group.tails()}")
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [2, 3])
def test_group_trains_one_model_and_only_the_chief_writes(corpus, tmp_path, workers):
    store = tmp_path / "store"
    run_dir = store / "mean" / "mw"
    group = Group(tmp_path, workers, trainer_args(corpus, store, "mw", epochs=2, sample=256))
    codes = group.run(store)
    assert codes == dict.fromkeys(range(workers), 0), group.tails()

    # One run, complete, written by the chief alone.
    assert (run_dir / "_SUCCESS").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirrored's class
    assert config["replicas"] == workers
    assert config["keras"] == "tf-keras"
    for i in range(1, workers):
        assert group.writes(i) == set(), f"worker {i} wrote to the store"
    chief_writes = group.writes(0)
    assert store_files(store) <= chief_writes, "files in the store the chief did not write"

    # Every worker evaluated the same synchronised model: identical final metrics.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    finals = [final_line(group.output(i)) for i in range(workers)]
    assert [f["chief"] for f in finals] == [True] + [False] * (workers - 1)
    for f in finals:
        assert f["run_id"] == "mw"
        assert f["replicas"] == workers
        assert f["test_accuracy"] == metrics["test_accuracy"]
        assert f["test_loss"] == metrics["test_loss"]
    assert metrics["epochs_completed"] == 2
    assert metrics["replicas"] == workers


def test_group_resumes_after_every_worker_is_killed(corpus, tmp_path):
    store = tmp_path / "store"
    run_dir = store / "mean" / "resume"
    epochs = 2  # killed in the last epoch: the rerun resumes into it and finishes
    # Enough steps per epoch that epoch 2 is still running when the kill lands.
    group = Group(tmp_path, 2, trainer_args(corpus, store, "resume", epochs=epochs, sample=CORPUS))
    try:
        group.start(store)
        wait_for(run_dir / "checkpoints" / "epoch-0001.keras", group, GROUP_TIMEOUT)
        group.kill()  # SIGKILL everyone, mid epoch 2: no handler runs, no last words
        done = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.keras"))
        assert done == ["epoch-0001.keras"], f"the kill came too late: {done}"
        assert not (run_dir / "_SUCCESS").exists()

        group.start(store)  # same run id, fresh ports
        codes = group.wait(GROUP_TIMEOUT)
    finally:
        group.kill()
    assert codes == {0: 0, 1: 0}, group.tails()
    for i in range(2):
        assert f"resuming run resume after epoch 1 of {epochs}" in group.output(i)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    assert all(len(v) == epochs for v in metrics["history"].values()), metrics["history"]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.keras")) == [
        f"epoch-{e:04d}.keras" for e in range(1, epochs + 1)
    ]
    assert (run_dir / "_SUCCESS").exists()
    assert group.writes(1) == set(), "worker 1 wrote to the store"
    finals = [final_line(group.output(i)) for i in range(2)]
    assert finals[0]["test_accuracy"] == finals[1]["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize("signalled", [[0, 1], [1], [0]], ids=["all", "worker-1", "chief"])
def test_sigterm_stops_the_group_at_a_checkpoint(corpus, tmp_path, signalled):
    """SIGTERM to every pod (a drain, a Job deleted) or to one pod only (a preemption:
    Kubernetes signals that pod alone, and the others are never told). The workers agree
    to stop after the same step of epoch 2: each exits 75 at once, that step is
    checkpointed (weights, optimizer, data position) and a rerun goes on from it to the
    model an uninterrupted group trains. No collective timeout is set, so a worker left
    alone in a collective would hang past the test's wait."""
    store = tmp_path / "store"
    run_dir = store / "mean" / "term"
    epochs = 2  # signalled in the last epoch: the rerun resumes into it
    steps = CORPUS // 16
    args = trainer_args(corpus, store, "term", epochs=epochs, sample=CORPUS)
    group = Group(tmp_path, 2, args, env={contract.COLLECTIVE_TIMEOUT_ENV: ""})
    try:
        group.start(store)
        wait_for(run_dir / "checkpoints" / "epoch-0001.keras", group, GROUP_TIMEOUT)
        for i in signalled:
            os.killpg(group.procs[i].pid, signal.SIGTERM)
        codes = group.wait(90)
        # A signalled worker exits 75 (counted by the Job), one stopped only by its group
        # 76 (ignored by the Job's podFailurePolicy).
        expected = {i: 75 if i in signalled else contract.EXIT_GROUP_STOPPED for i in range(2)}
        assert codes == expected, group.tails()
        names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        cut = [contract.in_epoch_position(f"checkpoints/{n}") for n in names]
        cut = [c for c in cut if c]
        assert "epoch-0002.keras" not in names and len(cut) == 1, names
        epoch, step = cut[0]
        assert epoch == 2 and 0 < step < steps, names
        part = json.loads((run_dir / contract.in_epoch_state_key(2, step)).read_text())
        assert len(part["history"]["loss"]) == 1, "a partial epoch was recorded as whole"
        assert part["in_epoch"]["position"] == steps + step
        assert not (run_dir / "_SUCCESS").exists()
        for i in range(2):
            why = (
                "signal 15" if i in signalled else "the worker group (another worker was signalled)"
            )
            said = f"stopped by {why} in epoch 2 of {epochs} after step {step} of {steps}"
            assert said in group.output(i), group.tails()
            assert "--run-id term" in group.output(i), group.tails()

        group.kill()  # all have exited: just forget them
        group.start(store)
        codes = group.wait(GROUP_TIMEOUT)
    finally:
        group.kill()
    assert codes == {0: 0, 1: 0}, group.tails()
    for i in range(2):
        said = f"resuming run term in epoch 2 of {epochs} from step {step} of {steps}"
        assert said in group.output(i), group.tails()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    assert (run_dir / "_SUCCESS").exists()
    if signalled == [1]:
        # The same run uninterrupted: the resumed group trained on the same batches.
        whole = Group(tmp_path / "whole", 2, trainer_args(corpus, store, "whole", epochs, CORPUS))
        (tmp_path / "whole").mkdir()
        assert whole.run(store) == {0: 0, 1: 0}, whole.tails()
        other = json.loads((store / "mean" / "whole" / "metrics.json").read_text())
        assert (metrics["test_accuracy"], metrics["test_loss"]) == (
            other["test_accuracy"],
            other["test_loss"],
        )


def test_sigterm_before_fit_stops_the_group_before_it_trains(corpus, tmp_path):
    """Worker 1 is signalled after the group formed but before training (as it creates its
    work directory): both workers stop at their first agreement after epoch 0 (worker 1
    exits 75, worker 0 76: stopped by its group), and nothing is checkpointed."""
    store = tmp_path / "store"
    run_dir = store / "mean" / "early"
    args = trainer_args(corpus, store, "early", epochs=3, sample=CORPUS)
    group = Group(tmp_path, 2, args, env={contract.COLLECTIVE_TIMEOUT_ENV: ""})
    codes = group.run(store, per_worker_env={1: {"MW_SIGNAL_ON": "imdb-train-"}})
    assert codes == {0: contract.EXIT_GROUP_STOPPED, 1: 75}, group.tails()
    assert "signal\t" in group.audit(1).read_text()
    assert "stopped by signal 15 after epoch 0 of 3" in group.output(1), group.tails()
    assert (
        "stopped by the worker group (another worker was signalled) after epoch 0 of 3"
        in group.output(0)
    ), group.tails()
    assert not list(run_dir.glob("checkpoints/*")) and not (run_dir / "_SUCCESS").exists()


@pytest.mark.parametrize(
    "peer", ["imdb-train-x-1.imdb-train-x.invalid", "127.0.0.1"], ids=["pending", "not-joined"]
)
def test_a_group_that_does_not_form_exits_resumable(corpus, tmp_path, peer):
    """A peer whose pod stays Pending (no DNS record yet) or whose process never joins:
    TensorFlow would wait an hour for it to register, deaf to SIGTERM, holding this
    worker's GPUs. IMDB_TRAIN_PEER_TIMEOUT bounds the wait: exit 78 (told apart from a
    failure of training: the Job does not count it) with one line naming the peer, nothing
    written to the store, so the Job's retry starts clean."""
    store = tmp_path / "store"
    timeout = 6
    missing = f"{peer}:{free_ports(1)[0]}"
    config = json.loads(tf_config(free_ports(1), 0))
    config["cluster"]["worker"].append(missing)
    group = Group(
        tmp_path,
        1,
        trainer_args(corpus, store, "alone", epochs=1, sample=256),
        env={contract.PEER_TIMEOUT_ENV: str(timeout), "TF_CONFIG": json.dumps(config)},
    )
    started = time.monotonic()
    codes = group.run(store, timeout + 90)
    elapsed = time.monotonic() - started
    assert codes == {0: contract.EXIT_GROUP_NOT_FORMED}, group.tails()
    assert elapsed >= timeout
    lines = [ln for ln in group.output(0).splitlines() if ln.startswith("stopped, resumable:")]
    assert len(lines) == 1, group.tails()
    assert f"did not form within {timeout} s ({contract.PEER_TIMEOUT_ENV})" in lines[0]
    assert missing in lines[0]
    assert ("not resolvable" in lines[0]) == peer.endswith(".invalid"), lines[0]
    assert store_files(store) == set(), "a group that never formed wrote to the store"


def test_killed_worker_fails_the_others_and_nothing_is_published(corpus, tmp_path):
    store = tmp_path / "store"
    run_dir = store / "mean" / "lost"
    args = trainer_args(corpus, store, "lost", epochs=3, sample=CORPUS)
    group = Group(tmp_path, 3, args, env={"IMDB_TRAIN_COLLECTIVE_TIMEOUT": "20"})
    try:
        group.start(store)
        wait_for(run_dir / "checkpoints" / "epoch-0001.keras", group, GROUP_TIMEOUT)
        killed_at = time.monotonic()
        group.kill([1])
        codes = group.wait(90, which=[0, 2])
        elapsed = time.monotonic() - killed_at
    finally:
        group.kill()
    assert codes == {0: 75, 2: 75}, group.tails()
    assert elapsed < 90
    for i in (0, 2):
        assert "error: the worker group broke (" in group.output(i), group.tails()
        assert "--run-id lost" in group.output(i)
    assert not (run_dir / "_SUCCESS").exists()
    assert not (run_dir / "metrics.json").exists()


def test_stuck_worker_trips_the_collective_timeout(corpus, tmp_path):
    """A peer that is alive (heartbeats flow) but never joins the next collective: only
    IMDB_TRAIN_COLLECTIVE_TIMEOUT bounds the wait."""
    store = tmp_path / "store"
    run_dir = store / "mean" / "stuck"
    timeout = 8
    args = trainer_args(corpus, store, "stuck", epochs=3, sample=256)
    group = Group(tmp_path, 2, args, env={"IMDB_TRAIN_COLLECTIVE_TIMEOUT": str(timeout)})
    try:
        # Worker 1 blocks when it starts writing its local epoch-1 checkpoint.
        group.start(store, per_worker_env={1: {"MW_HANG_ON": "epoch-0001.keras"}})
        deadline = time.monotonic() + GROUP_TIMEOUT
        while "hang\t" not in (group.audit(1).read_text() if group.audit(1).exists() else ""):
            assert time.monotonic() < deadline, group.tails()
            assert group.procs[0].poll() is None, group.tails()
            time.sleep(0.05)
        stuck_at = time.monotonic()
        codes = group.wait(timeout + 60, which=[0])
        elapsed = time.monotonic() - stuck_at
        assert group.procs[1].poll() is None, "the stuck worker should still be alive"
    finally:
        group.kill()
    assert codes == {0: 75}, group.tails()
    assert "DeadlineExceededError" in group.output(0), group.tails()
    assert elapsed >= timeout * 0.5
    assert not (run_dir / "_SUCCESS").exists()


def test_a_one_process_run_is_not_resumed_by_a_group(corpus, tmp_path):
    """A one-process run's checkpoints are Keras 3 files, which tf-keras cannot load: the
    group must refuse the run id as bad input (exit 2), not crash while loading."""
    from trainer.config import TrainConfig

    tarball, cache = corpus
    store = tmp_path / "store"
    run_dir = store / "mean" / "solo"
    args = trainer_args(corpus, store, "solo", epochs=2, sample=256)
    cfg = TrainConfig(
        model="mean", data=str(tarball), output=str(store), run_id="solo", epochs=2,
        sample=256, batch_size=16, learning_rate=0.02, cache_dir=str(cache),
        vocab_size=VOCAB, max_review_length=MAXLEN, neighbours="great",
    )  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "keras": "keras3"}))
    group = Group(tmp_path, 2, args)
    codes = group.run(store)
    assert codes == {0: 2, 1: 2}, group.tails()
    for i in range(2):
        assert "other settings (keras: 'keras3' -> 'tf-keras'" in group.output(i), group.tails()
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


@pytest.mark.parametrize("model", ["mean", "lstm"])
def test_uneven_final_batch_trains_on_every_worker(corpus, tmp_path, model):
    """300 reviews at a global batch of 64 leave a final batch of 44: split over two
    workers it differs from the others in shape, which a sparse (embedding) gradient's
    all-gather cannot take."""
    store = tmp_path / "store"
    args = trainer_args(corpus, store, "uneven", epochs=1, sample=300)
    args[args.index("--model") + 1] = model
    group = Group(tmp_path, 2, args)
    codes = group.run(store)
    assert codes == {0: 0, 1: 0}, group.tails()
    metrics = json.loads((store / model / "uneven" / contract.METRICS).read_text())
    assert metrics["train_examples"] == 300 and metrics["epochs_completed"] == 1
