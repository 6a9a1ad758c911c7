"""What only a real node shows: cgroup memory limits, image pulls, exec and log streaming.

These run where the cluster's nodes are kubelets with containerd (IMDB_CLUSTER_NODES=kubelet,
cluster/kubelet.py); the node agent (cluster/node.py) applies no cgroup limits, never pulls
and has no exec, so against it they are skipped, and would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from cluster.runtime import IMAGE_ENV
from tests.cluster.conftest import TOOLS, cli, install_chart, kubectl, submit_args, wait_for
from tests.cluster.test_user_story import job, pods_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def real(cluster):
    if not cluster.ports.get("registry"):
        pytest.skip("needs real nodes (IMDB_CLUSTER_NODES=kubelet)")
    return cluster


def terminated(pod: dict) -> dict:
    (cs,) = pod["status"].get("containerStatuses") or [{}]
    return (cs.get("state") or {}).get("terminated") or {}


def test_a_trainer_over_its_memory_limit_is_oomkilled_137_and_counted_as_a_failure(real, namespace):
    """The kernel kills at the cgroup's limit; exit 137 is no FailJob and no disruption,
    so the podFailurePolicy counts each such pod against backoffLimit."""
    install_chart(namespace)  # the trainer's ServiceAccount
    run_id = f"oom-{uuid.uuid4().hex[:6]}"
    args = submit_args(namespace, "--model", "mean", "--run-id", run_id, "--gpus", "0",
                       "--backoff-limit", "1")  # fmt: skip
    args[args.index("--memory") + 1] = "100Mi"
    args[args.index("--memory-limit") + 1] = "150Mi"  # TensorFlow's import alone is more
    submitted = cli("jobs.submit", *args)
    assert submitted.returncode == 0, submitted.stderr
    name = f"imdb-train-mean-{run_id}"

    def failed():
        j = job(namespace, name)
        conds = {c["type"]: c for c in j["status"].get("conditions", [])}
        return j if conds.get("Failed", {}).get("status") == "True" else None

    j = wait_for(f"job {name} to fail", failed, 300, every=2)
    conds = {c["type"]: c for c in j["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded", conds["Failed"]
    assert j["status"]["failed"] == 2  # the first pod and its one retry, both counted
    ends = [terminated(p) for p in pods_of(namespace, name)]
    assert ends and all(t.get("reason") == "OOMKilled" for t in ends), ends
    assert all(t.get("exitCode") == 137 for t in ends), ends


def test_an_image_not_in_the_registry_is_a_pull_error_and_status_says_so(real, namespace):
    missing = f"localhost:{real.ports['registry']}/imdb-train:no-such-tag"
    install_chart(namespace)
    run_id = f"pull-{uuid.uuid4().hex[:6]}"
    args = submit_args(namespace, "--model", "mean", "--run-id", run_id, "--gpus", "0")
    args[args.index("--image") + 1] = missing
    submitted = cli("jobs.submit", *args)
    assert submitted.returncode == 0, submitted.stderr
    name = f"imdb-train-mean-{run_id}"

    def said():
        out = cli("jobs.status", "--namespace", namespace, "--run-id", run_id).stdout
        row = [line for line in out.splitlines() if line.startswith(name)]
        if row and ("ErrImagePull" in row[0] or "ImagePullBackOff" in row[0]):
            return row[0]
        return None

    row = wait_for("jobs.status to name the pull error", said, 120, every=2)
    assert "Pending (" in row, row


def pod_manifest(name: str, command: str) -> dict:
    """A pod Pod Security `restricted` admits, in the trainer image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },  # fmt: skip
            "containers": [
                {
                    "name": "main",
                    "image": os.environ[IMAGE_ENV],
                    "command": ["sh", "-c", command],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                }
            ],  # fmt: skip
        },
    }


def test_kubectl_exec_and_logs_follow_work(real, namespace):
    # The pod waits for a file that `kubectl exec` writes, then prints three lines slowly.
    script = ("while [ ! -e /tmp/go ]; do sleep 0.2; done; "
              "for i in 1 2 3; do echo line $i; sleep 1; done")  # fmt: skip
    proc = subprocess.run([str(TOOLS / "kubectl"), "apply", "-n", namespace, "-f", "-"],
                          input=json.dumps(pod_manifest("talk", script)), text=True,
                          capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/talk", "--timeout=180s",
            timeout=200)  # fmt: skip
    who = kubectl("exec", "-n", namespace, "talk", "--", "sh", "-c", "id -u; touch /tmp/go")
    assert who.stdout.split() == ["10001"], who.stdout
    started = time.monotonic()
    follow = kubectl("logs", "-f", "-n", namespace, "talk", timeout=60)
    # -f streams until the container ends (about 3 s after the exec), not a snapshot.
    assert follow.stdout.split("\n")[:3] == ["line 1", "line 2", "line 3"], follow.stdout
    assert time.monotonic() - started > 1.0
