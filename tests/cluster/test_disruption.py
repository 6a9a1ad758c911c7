"""Preemption, a lost node and a broken worker group, on the real Job controller.

The disruptions come from where they come from on GKE: the Eviction API (what a drain or
the cluster autoscaler uses), a deleted Node (a spot VM reclaimed; the pod garbage collector
fails its pods), and a worker process killed inside its container.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from cluster import kubelet, local
from tests.cluster.conftest import (
    BUCKET,
    MEDIUM,
    cli,
    install_chart,
    kubectl,
    submit_args,
    wait_for,
)
from tests.cluster.test_user_story import condition, job, pods_of
from tests.helpers import gcs_client
from trainer.contract import EXIT_GROUP_STOPPED, EXIT_PREEMPTED, checkpoint_key, run_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def core() -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))


def checkpointed(namespace: str, model: str, run_id: str, epoch: int) -> bool:
    blobs = gcs_client(os.environ["STORAGE_EMULATOR_HOST"]).list_blobs(
        BUCKET, prefix=f"{namespace}/{run_key(model, run_id)}/{checkpoint_key(epoch)}"
    )
    return any(True for _ in blobs)


def running_pods(namespace: str, name: str) -> list[dict]:
    return [
        p for p in pods_of(namespace, name)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip


def pid1(cluster, pod: dict) -> int:
    """The container's PID 1 on the host: from the node's containerd, or as the node agent
    recorded it."""
    meta = pod["metadata"]
    if cluster.ports.get("registry"):
        (cs,) = pod["status"]["containerStatuses"]
        return kubelet.container_pid(cluster, pod["spec"]["nodeName"], cs["containerID"])
    d = Path(cluster.dir) / "nodes" / pod["spec"]["nodeName"] / "pods"
    (path,) = d.glob(f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}/pid1")
    return int(path.read_text())


def evict(namespace: str, pod: dict) -> None:
    """What a drain, the autoscaler or GKE's spot handling does: the Eviction API."""
    name = pod["metadata"]["name"]
    core().create_namespaced_pod_eviction(
        name, namespace, client.V1Eviction(metadata=client.V1ObjectMeta(name=name))
    )


def running_group(namespace: str, name: str, run_id: str) -> tuple[dict, dict]:
    """(worker 0, worker 1) of a 2-worker group, once epoch 1 is checkpointed."""
    wait_for("epoch 1's checkpoint", lambda: checkpointed(namespace, "lstm", run_id, 1), 400)
    pods = running_pods(namespace, name)
    assert len(pods) == 2
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
                for p in pods}  # fmt: skip
    return by_index["0"], by_index["1"]


def start_lstm(namespace: str, run_id: str, *extra: str, epochs: int = 3) -> str:
    install_chart(namespace)
    args = submit_args(namespace, "--model", "lstm", "--run-id", run_id, *extra,
                       data=MEDIUM, epochs=epochs)  # fmt: skip
    submitted = cli("jobs.submit", *args)
    assert submitted.returncode == 0, submitted.stderr
    return f"imdb-train-lstm-{run_id}"


def finish(namespace: str, name: str, run_id: str) -> dict:
    return wait_for(f"job {name} to end", lambda: _ended(namespace, name), 600, every=2)


def _ended(namespace: str, name: str) -> dict | None:
    j = job(namespace, name)
    if condition(j, "Complete") or condition(j, "Failed"):
        return j
    return None


def test_eviction_is_not_counted_and_the_replacement_resumes(namespace):
    run_id = f"ev{uuid.uuid4().hex[:5]}"
    name = start_lstm(namespace, run_id, "--gpus", "1")
    wait_for("epoch 1's checkpoint", lambda: checkpointed(namespace, "lstm", run_id, 1), 300)
    (pod,) = running_pods(namespace, name)
    evict(namespace, pod)
    done = finish(namespace, name, run_id)
    assert condition(done, "Complete"), done["status"]
    # DisruptionTarget matched the Ignore rule: nothing counted against backoffLimit.
    assert not done["status"].get("failed"), done["status"]
    logs = kubectl("logs", "-n", namespace, f"job/{name}").stdout
    # From epoch 1's checkpoint or inside epoch 2 (test_in_epoch_resume.py): either resumes.
    assert f"resuming run {run_id} " in logs, logs[-2000:]
    first = [p for p in pods_of(namespace, name) if p["metadata"]["uid"] == pod["metadata"]["uid"]]
    if first:  # the Job controller may already have removed it
        (ev,) = first
        assert condition(ev, "DisruptionTarget")["reason"] == "EvictionByEvictionAPI"
        assert ev["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == (
            EXIT_PREEMPTED
        )


def test_a_deleted_node_is_not_counted_and_the_run_completes_elsewhere(namespace, cluster):
    run_id = f"nd{uuid.uuid4().hex[:5]}"
    name = start_lstm(namespace, run_id, "--gpus", "1")
    wait_for("epoch 1's checkpoint", lambda: checkpointed(namespace, "lstm", run_id, 1), 300)
    (pod,) = running_pods(namespace, name)
    lost = pod["spec"]["nodeName"]
    try:
        local.lose_node(cluster, lost)  # the VM is gone, its containers with it
        done = finish(namespace, name, run_id)
        assert condition(done, "Complete"), done["status"]
        assert not done["status"].get("failed"), done["status"]
        nodes = {p["spec"]["nodeName"] for p in pods_of(namespace, name)}
        assert lost not in nodes  # the replacement ran on the other GPU node
        logs = kubectl("logs", "-n", namespace, f"job/{name}").stdout
        # A lost node may signal its pod first (an in-epoch checkpoint) or not at all.
        assert f"resuming run {run_id} " in logs, logs[-2000:]
    finally:
        local.restart_node(cluster, lost)  # GKE recreates the VM; the next tests need it


def test_a_killed_worker_stops_its_group_which_the_job_retries_and_resumes(namespace, cluster):
    run_id = f"mw{uuid.uuid4().hex[:5]}"
    name = start_lstm(namespace, run_id, "--gpus", "0", "--workers", "2")
    pods = running_group(namespace, name, run_id)
    os.kill(pid1(cluster, pods[1]), signal.SIGKILL)
    done = finish(namespace, name, run_id)
    assert condition(done, "Complete"), done["status"]
    codes = sorted(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        for p in pods_of(namespace, name)
        if p["metadata"]["uid"] in {q["metadata"]["uid"] for q in pods}
    )
    # The killed worker died of SIGKILL (137); its peer stopped with the group (75).
    assert codes == [EXIT_PREEMPTED, 128 + signal.SIGKILL], codes
    assert done["status"]["failed"] >= 1
    resumed = [p for p in pods_of(namespace, name) if p["status"].get("phase") == "Succeeded"]
    assert len(resumed) == 2


def test_a_worker_group_that_keeps_failing_stops_at_its_budget(namespace, cluster):
    run_id = f"bk{uuid.uuid4().hex[:5]}"
    name = start_lstm(namespace, run_id, "--gpus", "0", "--workers", "2", "--backoff-limit", "1")
    assert job(namespace, name)["spec"]["backoffLimit"] == 2  # 1 retry x 2 workers

    def kill_a_worker_or_end():
        j = job(namespace, name)
        if condition(j, "Failed") or condition(j, "Complete"):
            return j
        for p in running_pods(namespace, name):
            if len(running_pods(namespace, name)) == 2:
                time.sleep(3)  # let the group form, then break it
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(pid1(cluster, p), signal.SIGKILL)
                break
        return None

    done = wait_for("the budget to run out", kill_a_worker_or_end, 600, every=2)
    failed = condition(done, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded", done["status"]
    assert done["status"]["failed"] > 2


def test_evicting_one_worker_costs_the_group_nothing(namespace):
    """Spot preemption of one member: the evicted pod is ignored (DisruptionTarget) and so is
    its peer, which stops with the group and exits 76; the group resumes and completes with
    nothing counted, however often it happens (before, each peer's exit 75 counted)."""
    run_id = f"ep{uuid.uuid4().hex[:5]}"
    name = start_lstm(namespace, run_id, "--gpus", "0", "--workers", "2")
    peer, victim = running_group(namespace, name, run_id)
    evict(namespace, victim)
    done = finish(namespace, name, run_id)
    assert condition(done, "Complete"), done["status"]
    assert not done["status"].get("failed"), done["status"]  # nothing counted
    (stopped,) = [p for p in pods_of(namespace, name) if p["metadata"]["uid"] ==
                  peer["metadata"]["uid"]]  # fmt: skip
    code = stopped["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    assert code == EXIT_GROUP_STOPPED
