"""Worker groups as JobSets: JobSet's controller, built from its sources (cluster/jobset),
runs `jobs.submit --runtime jobset` on the real control plane.

What is shown: the group trains and completes, the commands find it (status, logs,
cancel); a preempted member restarts the whole group without using its budget; bad input
fails the JobSet at once; and a member that crashes counts (maxRestarts).
"""

from __future__ import annotations

import json
import uuid

import pytest

from cluster import addons
from tests.cluster.conftest import MEDIUM, cli, install_chart, kubectl, submit_args, wait_for
from tests.cluster.test_disruption import checkpointed, evict, running_pods
from tests.cluster.test_user_story import condition

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def jobset(cluster):
    addons.start_jobset(cluster)
    return cluster


def get_jobset(namespace: str, name: str) -> dict:
    return json.loads(kubectl("get", "jobset", name, "-n", namespace, "-o", "json").stdout)


def group_pods(namespace: str, name: str) -> list[dict]:
    out = kubectl("get", "pods", "-n", namespace, "-l",
                  f"jobset.sigs.k8s.io/jobset-name={name}", "-o", "json")  # fmt: skip
    return json.loads(out.stdout)["items"]


def submit(namespace: str, run_id: str, *extra: str, **kw) -> str:
    install_chart(namespace)  # the trainer's ServiceAccount
    args = submit_args(namespace, "--model", "lstm", "--run-id", run_id, "--gpus", "0",
                       "--workers", "2", "--runtime", "jobset", *extra, **kw)  # fmt: skip
    done = cli("jobs.submit", *args)
    assert done.returncode == 0, done.stderr
    assert f"jobset/imdb-train-lstm-{run_id} created" in done.stdout
    return f"imdb-train-lstm-{run_id}"


def ended(namespace: str, name: str) -> dict:
    def check() -> dict | None:
        js = get_jobset(namespace, name)
        return js if condition(js, "Completed") or condition(js, "Failed") else None

    return wait_for(f"jobset {name} to end", check, 900, every=2)


def test_a_jobset_group_trains_and_the_commands_find_it(jobset, namespace):
    run_id = f"js{uuid.uuid4().hex[:5]}"
    name = submit(namespace, run_id, "--wait")
    js = get_jobset(namespace, name)
    assert condition(js, "Completed")["status"] == "True"
    assert js["status"].get("restarts", 0) == 0
    pods = group_pods(namespace, name)
    # Two workers, <jobset>-worker-0-<index>, resolved through the JobSet's own Service.
    hosts = sorted(p["spec"]["hostname"] for p in pods)
    assert hosts == [f"{name}-worker-0-0", f"{name}-worker-0-1"]
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)
    logs = cli("jobs.logs", name, "-n", namespace)
    assert logs.returncode == 0, logs.stderr
    assert '"replicas": 2' in logs.stdout, logs.stdout[-2000:]  # both workers trained
    status = cli("jobs.status", "-n", namespace)
    assert f"{name}-worker-0 " in status.stdout and "Complete" in status.stdout, status.stdout
    cancel = cli("jobs.cancel", "--run-id", run_id, "-n", namespace)
    assert cancel.returncode == 0, cancel.stderr
    assert f"jobset/{name} deleted" in cancel.stdout
    assert kubectl("get", "jobset", name, "-n", namespace, check=False).returncode != 0


def test_a_preempted_member_restarts_the_group_for_free_and_it_resumes(jobset, namespace):
    run_id = f"jp{uuid.uuid4().hex[:5]}"
    name = submit(namespace, run_id, "--backoff-limit", "0", data=MEDIUM, epochs=3)
    wait_for("epoch 1's checkpoint", lambda: checkpointed(namespace, "lstm", run_id, 1), 600)
    victim = running_pods(namespace, f"{name}-worker-0")[-1]
    evict(namespace, victim)
    js = ended(namespace, name)
    # maxRestarts 0: the restart happened and was not counted, or the JobSet would have failed.
    assert condition(js, "Completed"), js["status"]
    assert js["status"]["restarts"] >= 1 and js["status"].get("restartsCountTowardsMax", 0) == 0
    logs = cli("jobs.logs", name, "-n", namespace)
    assert "resuming run" in logs.stdout, logs.stdout[-2000:]


def test_bad_input_fails_the_jobset_at_once(jobset, namespace):
    run_id = f"jb{uuid.uuid4().hex[:5]}"
    install_chart(namespace)
    args = submit_args(namespace, "--model", "lstm", "--run-id", run_id, "--gpus", "0",
                       "--workers", "2", "--runtime", "jobset", "--wait",
                       data="data/no-such-object.tar.gz")  # fmt: skip
    done = cli("jobs.submit", *args)
    assert done.returncode == 1
    assert "failed" in done.stderr and "FailJobSet" in done.stderr + json.dumps(
        get_jobset(namespace, f"imdb-train-lstm-{run_id}")["status"]
    )
    js = get_jobset(namespace, f"imdb-train-lstm-{run_id}")
    assert condition(js, "Failed")["status"] == "True"
    assert js["status"].get("restarts", 0) == 0


def test_kueue_admits_a_jobset_whole_or_not_at_all(jobset, namespace, tmp_path):
    """With 1 GPU of quota a 2-GPU group is not admitted at all (no pod starts); with 2 it
    is admitted as one Workload and trains."""
    from tests.cluster.test_kueue import queues

    addons.start_kueue(jobset)  # after JobSet: Kueue then manages JobSets too
    install_chart(namespace)
    (tmp_path / "queues.yaml").write_text(queues(namespace, gpus=1))
    kubectl("apply", "-f", str(tmp_path / "queues.yaml"))
    run_id = f"jk{uuid.uuid4().hex[:5]}"
    name = f"imdb-train-lstm-{run_id}"
    args = submit_args(namespace, "--model", "lstm", "--run-id", run_id, "--gpus", "1",
                       "--workers", "2", "--runtime", "jobset",
                       "--queue", "imdb-train")  # fmt: skip
    done = cli("jobs.submit", *args)
    assert done.returncode == 0, done.stderr

    def workload() -> dict | None:
        found = json.loads(kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace,
                                   "-o", "json").stdout)["items"]  # fmt: skip
        return found[0] if found and found[0].get("status", {}).get("conditions") else None

    pending = wait_for("Kueue's Workload for the JobSet", workload, 120)
    assert pending["metadata"]["ownerReferences"][0]["kind"] == "JobSet"
    reserved = condition(pending, "QuotaReserved")
    assert reserved["status"] == "False" and "insufficient" in reserved["message"].lower()
    assert get_jobset(namespace, name)["spec"]["suspend"] is True
    assert group_pods(namespace, name) == []  # not one member started
    (tmp_path / "queues.yaml").write_text(queues(namespace, gpus=2))
    kubectl("apply", "-f", str(tmp_path / "queues.yaml"))
    js = ended(namespace, name)
    assert condition(js, "Completed"), js["status"]
    admitted = wait_for("admitted Workload", workload, 30)
    assert condition(admitted, "Admitted")["status"] == "True"
    nodes = {p["spec"]["nodeName"] for p in group_pods(namespace, name)}
    assert len(nodes) == 2  # one GPU each: the two GPU nodes
