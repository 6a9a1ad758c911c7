"""One trainer per run id: the lease in the run's store, on both stores and between two real
trainer processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, trainer_env, write_tarball
from trainer import contract
from trainer.lease import Lease, LeaseHeldError
from trainer.storage import open_store


@pytest.fixture(params=["local", "gcs"])
def run_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "runs")).child("mean", "r1")
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/imdb").child("mean", "r1")


def test_a_live_holder_keeps_the_lease_and_release_hands_it_over(run_store):
    first = Lease(run_store, seconds=1.5, log=lambda _: None)
    first.acquire()
    try:
        second = Lease(run_store, seconds=1.5, log=lambda _: None)
        started = time.monotonic()
        with pytest.raises(LeaseHeldError, match=f"is being trained by {first.owner}"):
            second.acquire()  # first renews while second waits out one lifetime
        assert time.monotonic() - started >= 1.5
    finally:
        first.release()
    second.acquire()
    second.release()


def test_an_expired_lease_is_taken_over(run_store):
    stale = {"owner": "killed-pod:1:abc", "expires": time.time() + 0.5}
    run_store.write_bytes(contract.LEASE, json.dumps(stale).encode())
    said = []
    lease = Lease(run_store, seconds=5, log=said.append)
    lease.acquire()
    lease.release()
    assert said == ["taking over the expired lease of killed-pod:1:abc"]


# `python -m trainer` that pauses once, for PAUSE_SECONDS, as it starts writing a file whose
# name ends in PAUSE_ON: a trainer that holds its lease without spending CPU.
PAUSING_TRAINER = r"""
import os, runpy, sys, time
pause_on, seconds, paused = os.environ["PAUSE_ON"], float(os.environ["PAUSE_SECONDS"]), []

def hook(event, args):
    if event == "open" and not paused and str(args[0]).endswith(pause_on):
        paused.append(True)
        time.sleep(seconds)

sys.addaudithook(hook)
runpy.run_module("trainer", run_name="__main__", alter_sys=True)
"""


def test_two_trainers_on_one_run_id_never_both_train(tmp_path):
    data = write_tarball(tmp_path / "tiny.tar.gz")
    out = tmp_path / "out"
    args = ["--model", "mean", "--data", str(data), "--output", str(out), "--run-id", "r1",
            "--epochs", "2", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = trainer_env(**{contract.LEASE_SECONDS_ENV: "3"})
    # The first pauses (renewing its lease) as it checkpoints epoch 1, for longer than the
    # second needs to start and reach the lease.
    pausing = {**env, "PAUSE_ON": contract.checkpoint_key(1).split("/")[-1], "PAUSE_SECONDS": "20"}
    first = subprocess.Popen([sys.executable, "-c", PAUSING_TRAINER, *args], cwd=ROOT, env=pausing,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lease = out / "mean" / "r1" / contract.LEASE
        deadline = time.monotonic() + 120
        while not lease.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.exists(), first.communicate()
        second = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        out1, err1 = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == contract.EXIT_PREEMPTED, second.stderr[-2000:]
    assert "is being trained by" in second.stderr
    assert "epoch 1/2" not in second.stdout  # the second never trained
    assert first.returncode == 0, err1[-2000:]
    metrics = json.loads((out / "mean" / "r1" / contract.METRICS).read_text())
    assert metrics["epochs_completed"] == 2
