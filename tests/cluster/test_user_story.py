"""The user story on a real control plane: helm install, jobs.submit, status, logs, results.

Every Job here is created, scheduled, run and counted by the real kube-apiserver, scheduler
and Job controller (cluster/); pods run the trainer in the CPU image on the local nodes and
write to the storage emulator that stands in for the bucket.
"""

from __future__ import annotations

import json
import os
import shlex
import uuid
from pathlib import Path

import pytest

from cluster.runtime import IMAGE_ENV
from tests.cluster.conftest import (
    BUCKET,
    ROOT,
    SMALL,
    cli,
    helm,
    image_digest,
    install_chart,
    kubectl,
    submit_args,
    wait_for,
)
from trainer.contract import EXIT_BAD_INPUT, MODELS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def job(namespace: str, name: str) -> dict:
    return json.loads(kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)


def pods_of(namespace: str, job_name: str) -> list[dict]:
    out = kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job_name}", "-o", "json")
    return json.loads(out.stdout)["items"]


def job_logs(namespace: str, job_name: str) -> str:
    """The logs of every pod of a Job still there, oldest first: `kubectl logs job/NAME`
    shows one pod only, which after a group's restart may be a stopped one."""
    pods = sorted(pods_of(namespace, job_name), key=lambda p: p["metadata"]["creationTimestamp"])
    return "".join(
        kubectl("logs", "-n", namespace, p["metadata"]["name"], check=False).stdout for p in pods
    )


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == kind), None)


def test_helm_install_in_a_restricted_namespace_and_helm_test_passes(namespace):
    install_chart(namespace)
    # The namespace really enforces `restricted`: a root pod is refused by admission.
    refused = kubectl(
        "run",
        "root",
        "-n",
        namespace,
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        '{"spec":{"securityContext":{"runAsUser":0}}}',
        check=False,
    )
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    tested = helm("test", "imdb-train", "-n", namespace, "--logs", "--timeout", "3m")
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout
    assert f"wrote and deleted gs://{BUCKET}/{namespace}/_helm_test/" in tested.stdout
    accounts = kubectl("get", "serviceaccounts", "-n", namespace, "-o", "name").stdout.split()
    assert "serviceaccount/imdb-train" in accounts


def test_submit_all_wait_then_status_logs_and_results(namespace, tmp_path):
    install_chart(namespace)
    run_id = f"r{uuid.uuid4().hex[:6]}"
    submitted = cli("jobs.submit", *submit_args(namespace, "--model", "all", "--gpus", "1",
                                                "--run-id", run_id, "--wait"))  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    for model in MODELS:
        name = f"imdb-train-{model}-{run_id}"
        done = job(namespace, name)
        assert condition(done, "Complete")["status"] == "True"
        assert done["status"]["succeeded"] == 1 and not done["status"].get("failed")
        (pod,) = pods_of(namespace, name)
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        # The real scheduler put the GPU pod on a GPU node (it tolerates the GPU taint).
        node = json.loads(kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
        assert node["metadata"]["labels"]["cloud.google.com/gke-nodepool"] == "gpu-pool"

    status = cli("jobs.status", "-n", namespace)
    assert status.returncode == 0, status.stderr
    for model in MODELS:
        (row,) = [r.split() for r in status.stdout.splitlines() if run_id in r and model in r]
        assert row[3] == "Complete", status.stdout

    logs = cli("jobs.logs", "-n", namespace, "--model", "mean", "--run-id", run_id)
    assert logs.returncode == 0, logs.stderr
    assert "final: " in logs.stdout and f'"run_id": "{run_id}"' in logs.stdout

    output = f"gs://{BUCKET}/{namespace}"
    listed = cli("jobs.results", "list", "--output", output)
    assert listed.returncode == 0, listed.stderr
    rows = [r.split() for r in listed.stdout.splitlines()]
    for model in MODELS:
        (row,) = [r for r in rows if r[:2] == [model, run_id]]
        assert row[2] == "complete", listed.stdout
    pulled = cli("jobs.results", "pull", "--output", output, "--model", "lstm", "--run-id",
                 run_id, "--dest", str(tmp_path / "pulled"))  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    metrics = json.loads(next((tmp_path / "pulled").rglob("metrics.json")).read_text())
    assert metrics["run_id"] == run_id and metrics["epochs_completed"] == 1


def test_bad_input_fails_the_job_at_once_through_the_pod_failure_policy(namespace):
    install_chart(namespace)
    run_id = f"bad{uuid.uuid4().hex[:5]}"
    args = submit_args(namespace, "--model", "mean", "--gpus", "0", "--run-id", run_id)
    args[args.index("--data") + 1] = f"gs://{BUCKET}/data/no-such-object.tar.gz"
    submitted = cli("jobs.submit", *args, "--wait")
    assert submitted.returncode != 0
    name = f"imdb-train-mean-{run_id}"
    failed = job(namespace, name)
    cond = condition(failed, "Failed")
    # The real Job controller applied our podFailurePolicy: FailJob on exit 2, no retry.
    assert cond["status"] == "True" and cond["reason"] == "PodFailurePolicy", cond
    assert failed["status"]["failed"] == 1
    (pod,) = pods_of(namespace, name)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == EXIT_BAD_INPUT
    status = cli("jobs.status", "-n", namespace)
    assert "Failed" in status.stdout and "PodFailurePolicy" in status.stdout, status.stdout


def test_more_gpus_than_any_node_has_stays_pending_with_the_schedulers_reason(namespace):
    install_chart(namespace)
    run_id = f"big{uuid.uuid4().hex[:5]}"
    submitted = cli("jobs.submit", *submit_args(namespace, "--model", "mean", "--gpus", "4",
                                                "--run-id", run_id))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    name = f"imdb-train-mean-{run_id}"

    def unschedulable():
        pods = pods_of(namespace, name)
        conds = [condition(p, "PodScheduled") for p in pods if p.get("status")]
        return [c for c in conds if c and c.get("reason") == "Unschedulable"]

    (cond,) = wait_for("the scheduler's verdict", unschedulable, 60)
    assert "Insufficient nvidia.com/gpu" in cond["message"], cond
    status = cli("jobs.status", "-n", namespace)
    assert "Insufficient nvidia.com/gpu" in status.stdout, status.stdout
    assert "FailedScheduling" in status.stdout or "Unschedulable" in status.stdout


def test_the_notes_submit_command_runs_for_any_release_pinned_by_digest(namespace, tmp_path):
    """One ServiceAccount name for chart, NOTES and jobs.submit whatever the release is
    called; an image pinned by digest; jobs.submit in the kubeconfig context's namespace."""
    digest = image_digest(os.environ[IMAGE_ENV])
    assert digest.startswith("sha256:"), digest
    repo = os.environ[IMAGE_ENV].rsplit(":", 1)[0]
    helm("install", "nightly", str(ROOT / "helm" / "imdb-train"), "-n", namespace,
         "--set", f"image.repository={repo}", "--set", f"image.tag={digest}",
         # A release pinned by digest names its helm test image's digest too (the CPU
         # image's; here the trainer image is the CPU image already).
         "--set", f"tests.image.tag={digest}",
         "--set", f"output=gs://{BUCKET}/{namespace}",
         "--set", "accelerator=nvidia-l4")  # fmt: skip
    notes = helm("get", "notes", "nightly", "-n", namespace).stdout
    (line,) = [x.strip() for x in notes.splitlines() if "python -m jobs.submit" in x]
    argv = shlex.split(line)[3:]  # after `python -m jobs.submit`
    assert f"{repo}@{digest}" in argv and "--service-account" in argv
    run_id = f"n{uuid.uuid4().hex[:5]}"
    extra = ["--run-id", run_id, "--epochs", "1", "--cpu", "1", "--memory", "2Gi", "--memory-limit",
             "3Gi", "--data", f"gs://{BUCKET}/{SMALL}", "--timeout", "300"]  # fmt: skip
    ran = cli("jobs.submit", *argv, *extra)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (pod,) = pods_of(namespace, f"imdb-train-lstm-{run_id}")
    assert pod["spec"]["containers"][0]["image"] == f"{repo}@{digest}"

    # No --namespace: the kubeconfig context's, as jobs.status and kubectl use it.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(Path(os.environ["KUBECONFIG"]).read_text())
    kubectl("--kubeconfig", str(kubeconfig), "config", "set-context", "--current",
            f"--namespace={namespace}")  # fmt: skip
    other = f"c{uuid.uuid4().hex[:5]}"
    args = submit_args(namespace, "--model", "mean", "--gpus", "0", "--run-id", other)
    del args[args.index("--namespace") : args.index("--namespace") + 2]
    submitted = cli("jobs.submit", *args, "--kubeconfig", str(kubeconfig))
    assert submitted.returncode == 0, submitted.stderr
    assert f"created in namespace {namespace}" in submitted.stdout
    assert f"-n {namespace} --follow" in submitted.stdout
    assert pods_of(namespace, f"imdb-train-mean-{other}") or wait_for(
        "the context namespace's pod", lambda: pods_of(namespace, f"imdb-train-mean-{other}"), 30
    )


def millicpu(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def cpu_requested_on(node: str) -> int:
    """Millicores the pods bound to `node` and not yet ended request (what the scheduler
    counts, pods being deleted included)."""
    out = kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", "-o", "json")
    total = 0
    for pod in json.loads(out.stdout)["items"]:
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for c in pod["spec"]["containers"]:
            total += millicpu(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
    return total


def test_a_group_with_one_unschedulable_worker_is_pending_not_running(namespace):
    """Each worker asks for 60 % of cpu-1's CPUs (the only node without a GPU taint): one
    runs, its peer cannot be placed. The group waits for it, so jobs.status says Pending
    with the scheduler's reason, and lists only this Job's events."""
    install_chart(namespace)
    node = json.loads(kubectl("get", "node", "cpu-1", "-o", "json").stdout)
    allocatable = millicpu(node["status"]["allocatable"]["cpu"])
    share = f"{allocatable * 3 // 5}m"
    # Pods of earlier tests still terminating on cpu-1 would keep the first worker out too.
    wait_for("cpu-1 free of earlier pods", lambda: cpu_requested_on("cpu-1") == 0, 180, every=2)
    run_id = f"half{uuid.uuid4().hex[:4]}"
    args = submit_args(namespace, "--model", "mean", "--gpus", "0", "--workers", "2",
                       "--run-id", run_id, "--cpu", share, "--cpu-limit", share)  # fmt: skip
    assert cli("jobs.submit", *args).returncode == 0
    name = f"imdb-train-mean-{run_id}"

    def half_running():
        phases = sorted((p.get("status") or {}).get("phase", "") for p in pods_of(namespace, name))
        return phases == ["Pending", "Running"]

    wait_for("one worker running, one pending", half_running, 120)
    kubectl("run", "bystander", "-n", namespace, "--image=busybox", "--restart=Never",
            "--overrides", '{"spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":1,'
            '"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"bystander",'
            '"image":"busybox","securityContext":{"allowPrivilegeEscalation":false,'
            '"capabilities":{"drop":["ALL"]}}}]}}', check=False)  # fmt: skip
    status = cli("jobs.status", "-n", namespace)
    (row,) = [r for r in status.stdout.splitlines() if r.startswith(f"{name} ")]
    assert "Pending" in row and "Running" not in row.split()[3], status.stdout
    assert "Insufficient cpu" in status.stdout and "1/2 running" in status.stdout
    assert "bystander" not in status.stdout  # another object's events are not listed
    print(status.stdout)


def test_a_gpu_type_no_node_has_stays_pending_and_says_so(namespace):
    """--accelerator is the node selector cloud.google.com/gke-accelerator: on a cluster of
    L4 nodes a T4 Job waits (as on GKE Standard until a T4 pool exists) instead of landing
    on whatever GPU has room."""
    install_chart(namespace)
    run_id = f"t4{uuid.uuid4().hex[:5]}"
    args = submit_args(namespace, "--model", "mean", "--gpus", "1", "--run-id", run_id,
                       "--accelerator", "nvidia-tesla-t4")  # fmt: skip
    assert cli("jobs.submit", *args).returncode == 0
    name = f"imdb-train-mean-{run_id}"
    (pod,) = wait_for("the pod", lambda: pods_of(namespace, name), 30)
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}

    def unschedulable():
        conds = [condition(p, "PodScheduled") for p in pods_of(namespace, name) if p.get("status")]
        return [c for c in conds if c and c.get("reason") == "Unschedulable"]

    (cond,) = wait_for("the scheduler's verdict", unschedulable, 60)
    assert "didn't match Pod's node affinity/selector" in cond["message"], cond
