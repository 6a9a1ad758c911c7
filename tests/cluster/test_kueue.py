"""Kueue, built from its sources (cluster/kueue), admits queued Jobs on the real control plane.

The queues are docs/kueue.yaml, as a user applies them, with the GPU quota cut to 1.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from cluster import addons
from tests.cluster.conftest import ROOT, cli, install_chart, kubectl, submit_args, wait_for
from tests.cluster.test_user_story import condition

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kueue(cluster):
    addons.start_kueue(cluster)
    return cluster


def queues(namespace: str, gpus: int) -> str:
    docs = [d for d in yaml.safe_load_all((ROOT / "docs" / "kueue.yaml").read_text()) if d]
    for d in docs:
        if d["kind"] == "LocalQueue":
            d["metadata"]["namespace"] = namespace
        if d["kind"] in ("ClusterQueue", "ResourceFlavor"):
            d["metadata"]["name"] = f"{d['metadata']['name']}-{namespace}"
        if d["kind"] == "ClusterQueue":
            for group in d["spec"]["resourceGroups"]:
                for flavor in group["flavors"]:
                    flavor["name"] = f"{flavor['name']}-{namespace}"
                    for r in flavor["resources"]:
                        if r["name"] == "nvidia.com/gpu":
                            r["nominalQuota"] = gpus
        if d["kind"] == "LocalQueue":
            d["spec"]["clusterQueue"] = f"{d['spec']['clusterQueue']}-{namespace}"
    return yaml.safe_dump_all(docs)


def suspended(namespace: str, name: str) -> bool:
    j = json.loads(kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
    return bool(j["spec"].get("suspend"))


def test_a_second_queued_job_waits_for_the_first_to_finish(kueue, namespace, tmp_path):
    install_chart(namespace)
    (tmp_path / "queues.yaml").write_text(queues(namespace, gpus=1))
    kubectl("apply", "-f", str(tmp_path / "queues.yaml"))
    names = []
    for model in ("mean", "lstm"):
        run_id = f"q{uuid.uuid4().hex[:5]}"
        args = submit_args(namespace, "--model", model, "--gpus", "1", "--run-id", run_id,
                           "--queue", "imdb-train", epochs=2)  # fmt: skip
        submitted = cli("jobs.submit", *args)
        assert submitted.returncode == 0, submitted.stderr
        names.append(f"imdb-train-{model}-{run_id}")
    first, second = names
    # Kueue admits one (1 GPU of quota), the other stays suspended while it runs.
    wait_for(
        "one admission", lambda: suspended(namespace, first) != suspended(namespace, second), 60
    )
    running, waiting = (first, second) if not suspended(namespace, first) else (second, first)
    workloads = json.loads(kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o",
                                   "json").stdout)["items"]  # fmt: skip
    assert len(workloads) == 2
    pending = [w for w in workloads if not condition(w, "QuotaReserved") or
               condition(w, "QuotaReserved")["status"] != "True"]  # fmt: skip
    assert len(pending) == 1 and "nvidia.com/gpu" in condition(pending[0], "QuotaReserved")[
        "message"], pending  # fmt: skip

    def complete(name):
        j = json.loads(kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
        return condition(j, "Complete")

    while not complete(running):
        assert suspended(namespace, waiting), "admitted while the quota was in use"
        time.sleep(1)
    wait_for("the second admitted", lambda: not suspended(namespace, waiting), 120)
    wait_for("the second complete", lambda: complete(waiting), 300, every=2)


def test_a_queue_that_never_admits_is_named_and_cannot_wedge_retraining(kueue, namespace):
    """The chart's CronJob with a queue whose LocalQueue does not exist: Kueue never admits
    its Job. jobs.status says so in Kueue's words, and the next tick replaces the Job
    (under Forbid every later tick was skipped while it waited, forever)."""
    install_chart(namespace, "--set", "queue=no-such-queue", "--set", "retrain.schedule=* * * * *")
    cron = json.loads(kubectl("get", "cronjob", "imdb-train-retrain-lstm", "-n", namespace,
                              "-o", "json").stdout)  # fmt: skip
    assert cron["spec"]["concurrencyPolicy"] == "Replace"

    def jobs():
        out = kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout
        return [j["metadata"]["name"] for j in json.loads(out)["items"]]

    (first,) = wait_for("the first tick's Job", jobs, 90)
    assert suspended(namespace, first)

    def explained():
        out = cli("jobs.status", "-n", namespace).stdout
        return out if "not admitted" in out and "no-such-queue" in out else None

    status = wait_for("Kueue's reason in jobs.status", explained, 60, every=2)
    assert "suspended" in status, status

    def replaced():
        names = jobs()
        return names if names and first not in names else None

    (second,) = wait_for("the next tick to replace it", replaced, 130, every=2)
    assert second != first
