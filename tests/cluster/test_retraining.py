"""Scheduled retraining through the real CronJob controller, and helm upgrade during a run."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.cluster.conftest import BUCKET, cli, helm, install_chart, kubectl, wait_for
from tests.cluster.test_user_story import condition, pods_of
from trainer.contract import EXIT_PREEMPTED
from trainer.data.sources import KERAS_NPZ_URL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CRON = "imdb-train-retrain-lstm"


def jobs_of_cron(namespace: str) -> list[dict]:
    items = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    return [
        j for j in items
        if any(o["kind"] == "CronJob" and o["name"] == CRON
               for o in j["metadata"].get("ownerReferences", []))
    ]  # fmt: skip


def test_the_cronjob_retrains_and_promotes_and_an_upgrade_leaves_the_run_alone(namespace):
    install_chart(
        namespace,
        "--set",
        "retrain.schedule=* * * * *",
        "--set",
        "epochs=2",
        "--set",
        "gpus=1",
        "--set",
        "resources.requests.cpu=1",
        "--set",
        "resources.requests.memory=2Gi",
        "--set",
        "resources.limits.memory=3Gi",
    )
    # The real CronJob controller creates the Job at the next minute.
    (first,) = wait_for("a Job from the CronJob", lambda: jobs_of_cron(namespace), 90)
    name, uid = first["metadata"]["name"], first["metadata"]["uid"]
    wait_for(
        "its pod running",
        lambda: [p for p in pods_of(namespace, name) if p["status"].get("phase") == "Running"],
        120,
    )
    (pod,) = pods_of(namespace, name)

    # helm upgrade mid-run: a new schedule (and so no second tick) and a new epoch count.
    helm("upgrade", "imdb-train", "./helm/imdb-train", "-n", namespace, "--reuse-values",
         "--set", "retrain.schedule=0 3 * * 0", "--set", "epochs=3")  # fmt: skip
    cron = json.loads(kubectl("get", "cronjob", CRON, "-n", namespace, "-o", "json").stdout)
    assert cron["spec"]["schedule"] == "0 3 * * 0"

    def ended():
        j = json.loads(kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
        return j if condition(j, "Complete") or condition(j, "Failed") else None

    done = wait_for("the scheduled run", ended, 400, every=2)
    assert done["metadata"]["uid"] == uid and condition(done, "Complete"), done["status"]
    (after,) = pods_of(namespace, name)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]  # never restarted
    assert [j["metadata"]["uid"] for j in jobs_of_cron(namespace)] == [uid]

    output = f"gs://{BUCKET}/{namespace}"
    shown = cli("jobs.results", "show", "--output", output, "--model", "lstm", "--json-output")
    assert shown.returncode == 0, shown.stderr
    metrics = json.loads(shown.stdout)["metrics"]
    # The run id is the Job's name; the scheduled run was promoted to latest.
    assert metrics["run_id"] == name and metrics["epochs_completed"] == 2


def _exit_codes(namespace: str, job_name: str) -> list[tuple[str, int]]:
    """(pod name, exit code) of every pod of the Job whose trainer has ended, oldest first."""
    pods = sorted(pods_of(namespace, job_name), key=lambda p: p["metadata"]["creationTimestamp"])
    ended = []
    for p in pods:
        for s in p["status"].get("containerStatuses") or []:
            done = (s.get("state") or {}).get("terminated") or (s.get("lastState") or {}).get(
                "terminated"
            )
            if done:
                ended.append((p["metadata"]["name"], done["exitCode"]))
    return ended


def test_a_tick_with_keras_data_and_no_network_is_retried_not_failed(namespace):
    # Issue 31, class 7: the chart's default `--data keras` where the cluster cannot resolve
    # storage.googleapis.com. A DNS failure is an outage (75: the Job retries), not bad
    # input (2: FailJob, as it was).
    try:
        socket.getaddrinfo(urlsplit(KERAS_NPZ_URL).hostname, 443)
    except socket.gaierror:
        pass
    else:
        pytest.skip("this machine resolves the Keras data's host: no outage to show")
    install_chart(namespace, "--set", "data=keras", "--set", "gpus=1",
                  "--set", "resources.requests.cpu=1", "--set", "resources.requests.memory=2Gi",
                  "--set", "resources.limits.memory=3Gi")  # fmt: skip
    name = "tick-offline"
    kubectl("create", "job", "-n", namespace, f"--from=cronjob/{CRON}", name)
    (first, code), *_ = wait_for("the first pod to end", lambda: _exit_codes(namespace, name), 300)
    assert code == EXIT_PREEMPTED, (first, code)
    log = kubectl("logs", "-n", namespace, first).stdout  # the container's stdout and stderr
    assert "stopped, resumable: cannot download https://" in log, log[-2000:]
    # Counted as a retry: a second pod, and no FailJob by the pod failure policy.
    wait_for("the retry's pod", lambda: len(pods_of(namespace, name)) >= 2, 120)
    j = json.loads(kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
    failed = condition(j, "Failed")
    assert failed is None or failed.get("reason") != "PodFailurePolicy", j["status"]
    print(f"offline tick: pod {first} exit {code}, retried")
    kubectl("delete", "job", name, "-n", namespace, "--wait=false")
