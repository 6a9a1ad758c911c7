"""Preemption mid-epoch on the real control plane: the evicted pod checkpoints the step it
is at, and its replacement resumes inside that epoch (one pod, and a 2-worker group)."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from tests.cluster.conftest import BUCKET, wait_for
from tests.cluster.test_disruption import (
    checkpointed,
    evict,
    finish,
    running_group,
    running_pods,
    start_lstm,
)
from tests.cluster.test_user_story import condition, job_logs
from tests.helpers import gcs_client
from trainer import contract

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

RESUMED = re.compile(r"resuming run (\S+) in epoch (\d+) of \d+ from step (\d+) of (\d+)")


def in_epoch_steps(namespace: str, run_id: str) -> list[tuple[int, int]]:
    """(epoch, step) of every in-epoch checkpoint of the run in the bucket."""
    prefix = f"{namespace}/{contract.run_key('lstm', run_id)}/"
    blobs = gcs_client(os.environ["STORAGE_EMULATOR_HOST"]).list_blobs(BUCKET, prefix=prefix)
    found = (contract.in_epoch_position(b.name[len(prefix) :]) for b in blobs)
    return [p for p in found if p]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-pod", "group"])
def test_an_eviction_mid_epoch_resumes_inside_that_epoch(namespace, workers):
    run_id = f"ie{workers}{uuid.uuid4().hex[:5]}"
    extra = ("--workers", "2") if workers > 1 else ()
    name = start_lstm(namespace, run_id, "--gpus", "1", *extra)
    if workers > 1:
        pod = running_group(namespace, name, run_id)[1]  # a peer, not the chief
    else:
        wait_for("epoch 1's checkpoint", lambda: checkpointed(namespace, "lstm", run_id, 1), 300)
        (pod,) = running_pods(namespace, name)
    evict(namespace, pod)  # SIGTERM inside epoch 2, as GKE's Spot reclaim sends it
    wait_for("the in-epoch checkpoint", lambda: in_epoch_steps(namespace, run_id), 120)
    done = finish(namespace, name, run_id)
    assert condition(done, "Complete"), done["status"]
    assert not done["status"].get("failed"), done["status"]  # DisruptionTarget: Ignore
    logs = job_logs(namespace, name)
    resumed = [m.groups() for m in RESUMED.finditer(logs)]
    assert resumed, logs[-2000:]
    rid, epoch, step, steps = resumed[-1]
    assert rid == run_id and epoch == "2" and 0 < int(step) < int(steps), resumed
    print(f"{workers} worker(s): evicted in epoch {epoch}, resumed from step {step} of {steps}")
    # Superseded by epoch 2's own checkpoint once the replacement finished the epoch.
    assert in_epoch_steps(namespace, run_id) == []
