"""The fake API server behaves like a real one: checked with the official client and kubectl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fakes.k8s_checks import ROOT
from tests.fakes.kube_api import INDEX_ANNOTATION, FakeKube, Script

pytestmark = pytest.mark.timeout(60)

KUBECTL = ROOT / ".tools" / "bin" / "kubectl"


@pytest.fixture
def kube(tmp_path):
    fake = FakeKube().start()
    fake.add("serviceaccounts", "default", {"metadata": {"name": "trainer"}})
    fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    yield fake
    fake.stop()


@pytest.fixture
def api(kube):
    api_client = config.new_client_from_config(config_file=str(kube.kubeconfig))
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


def job_body(name: str, **spec) -> dict:
    pod = {
        "restartPolicy": "Never",
        "serviceAccountName": "trainer",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "trainer",
                "image": "example.com/imdb-train:1",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    pod.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod}, **spec},
    }


def pod_states(kube, job):
    """(phase, waiting reason) of each pod of the Job."""
    out = []
    for pod in kube.pods_of(job):
        cs = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
        out.append((pod["status"].get("phase"), cs.get("waiting", {}).get("reason")))
    return out


def events_for(kube, name):
    return [
        (o["reason"], o["message"])
        for k, o in sorted(
            kube.objects.items(), key=lambda kv: int(kv[1]["metadata"]["resourceVersion"])
        )
        if k[0] == "events" and o["involvedObject"]["name"] == name
    ]


def test_pod_goes_pending_creating_running_succeeded(kube, api):
    batch, core = api
    kube.scripts["j1"] = Script(start_delay=0.3, delay=0.5)
    batch.create_namespaced_job("default", job_body("j1"))
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, "default", timeout_seconds=10):
        pod = event["object"]
        cs = (pod.status.container_statuses or [None])[0]
        waiting = cs and cs.state.waiting and cs.state.waiting.reason
        seen.append((pod.status.phase, waiting))
        if pod.status.phase == "Succeeded":
            w.stop()
    assert ("Pending", "ContainerCreating") in seen
    assert seen.index(("Pending", "ContainerCreating")) < seen.index(("Running", None))
    assert seen[-1] == ("Succeeded", None)
    job = kube.wait_for(lambda k: _done(k, "j1"))
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert job["status"]["succeeded"] == 1 and job["status"]["active"] == 0


def _done(kube, name):
    job = kube.objects.get(("jobs", "default", name))
    types = {c["type"] for c in (job or {}).get("status", {}).get("conditions", [])}
    return job if types & {"Complete", "Failed"} else None


def test_missing_image_backs_off_and_logs_answer_400(kube, api):
    batch, core = api
    kube.scripts["j2"] = Script(start="ImagePullBackOff")
    batch.create_namespaced_job("default", job_body("j2"))
    kube.wait_for(lambda k: pod_states(k, "j2") == [("Pending", "ImagePullBackOff")])
    (pod,) = kube.pods_of("j2")
    reasons = [r for r, _ in events_for(kube, pod["metadata"]["name"])]
    assert reasons[:2] == ["Scheduled", "Pulling"] and "BackOff" in reasons
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log(pod["metadata"]["name"], "default", container="trainer")
    assert err.value.status == 400
    assert "is waiting to start: trying and failing to pull image" in err.value.body


def test_unschedulable_pod_stays_pending_with_an_event(kube, api):
    batch, _ = api
    kube.scripts["j3"] = Script(start="Unschedulable")
    batch.create_namespaced_job("default", job_body("j3"))
    kube.wait_for(lambda k: events_for(k, k.pods_of("j3")[0]["metadata"]["name"]))
    (pod,) = kube.pods_of("j3")
    ((reason, message),) = events_for(kube, pod["metadata"]["name"])
    assert reason == "FailedScheduling" and "Insufficient nvidia.com/gpu" in message
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"


def test_indexed_job_gets_one_pod_per_index_with_dns_names(kube, api):
    batch, _ = api
    kube.scripts["w"] = Script(outcome="hang")
    body = job_body("w", completionMode="Indexed", completions=3, parallelism=3,
                    pod={"subdomain": "w"})  # fmt: skip
    batch.create_namespaced_job("default", body)
    pods = kube.wait_for(lambda k: len(k.pods_of("w")) == 3 and k.pods_of("w"))
    by_index = {p["metadata"]["annotations"][INDEX_ANNOTATION]: p for p in pods}
    assert sorted(by_index) == ["0", "1", "2"]
    for index, pod in by_index.items():
        assert pod["spec"]["hostname"] == f"w-{index}" and pod["spec"]["subdomain"] == "w"
        env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert "JOB_COMPLETION_INDEX" in env


def test_failed_worker_fails_an_indexed_job_and_stops_its_peers(kube, api):
    batch, _ = api
    kube.scripts["g"] = Script(outcome="fail", fail_index=1, exit_code=75)
    body = job_body("g", completionMode="Indexed", completions=2, parallelism=2)
    batch.create_namespaced_job("default", body)
    job = kube.wait_for(lambda k: _done(k, "g"))
    assert job["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    # The healthy peer is stopped and removed; the failed pod stays for inspection.
    (pod,) = kube.wait_for(lambda k: len(k.pods_of("g")) == 1 and k.pods_of("g"))
    assert pod["metadata"]["annotations"][INDEX_ANNOTATION] == "1"
    assert pod["status"]["phase"] == "Failed"


def test_pod_failure_policy_fail_job_on_exit_2(kube, api):
    batch, _ = api
    kube.scripts["p"] = Script(outcome="fail", exit_code=2)
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": "trainer", "operator": "In", "values": [2]}}]}  # fmt: skip
    batch.create_namespaced_job("default", job_body("p", backoffLimit=3, podFailurePolicy=policy))
    job = kube.wait_for(lambda k: _done(k, "p"))
    cond = job["status"]["conditions"][-1]
    assert cond["reason"] == "PodFailurePolicy"
    assert "failed with exit code 2 matching FailJob rule at index 0" in cond["message"]


def test_backoff_limit_retries_pods_then_fails(kube, api):
    batch, _ = api
    kube.scripts["b"] = Script(outcome="fail", delay=0.05)
    batch.create_namespaced_job("default", job_body("b", backoffLimit=2))
    job = kube.wait_for(lambda k: _done(k, "b"))
    assert job["status"]["failed"] == 3
    assert job["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"


def test_suspended_job_makes_no_pods_until_resumed(kube, api):
    batch, _ = api
    batch.create_namespaced_job("default", job_body("s", suspend=True))
    job = kube.wait_for(lambda k: k.objects[("jobs", "default", "s")]["status"].get("conditions"))
    assert job[0]["type"] == "Suspended" and not kube.pods_of("s")
    assert "startTime" not in kube.objects[("jobs", "default", "s")]["status"]
    batch.patch_namespaced_job("s", "default", {"spec": {"suspend": False}})
    kube.wait_for(lambda k: _done(k, "s"))
    assert len(kube.pods_of("s")) == 1


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param(
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": "trainer", "image": "other:2"}]}}
                }
            },
            id="template",
        ),  # fmt: skip
        pytest.param({"spec": {"completions": 4}}, id="completions"),
        pytest.param({"spec": {"selector": {"matchLabels": {"a": "b"}}}}, id="selector"),
    ],
)
def test_immutable_job_fields_are_refused(kube, api, patch):
    batch, _ = api
    kube.scripts["i"] = Script(outcome="hang")
    batch.create_namespaced_job("default", job_body("i"))
    kube.wait_for(lambda k: pod_states(k, "i") == [("Running", None)])
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job("i", "default", patch)
    assert err.value.status == 422 and "field is immutable" in err.value.body
    # PUT the same change: also refused.
    job = batch.read_namespaced_job("i", "default")
    job.spec.template.spec.containers[0].image = "other:2"
    with pytest.raises(ApiException) as err:
        batch.replace_namespaced_job("i", "default", job)
    assert err.value.status == 422


def test_delete_background_is_asynchronous(kube, api):
    batch, _ = api
    kube.scripts["d"] = Script(outcome="hang")
    batch.create_namespaced_job("default", job_body("d"))
    kube.wait_for(lambda k: pod_states(k, "d") == [("Running", None)])
    batch.delete_namespaced_job("d", "default", propagation_policy="Background")
    assert ("jobs", "default", "d") not in kube.objects
    (pod,) = kube.pods_of("d")  # still there: the garbage collector comes afterwards
    kube.wait_for(lambda k: not k.pods_of("d"))


def test_delete_foreground_keeps_the_job_until_pods_are_gone(kube, api):
    batch, _ = api
    kube.scripts["f"] = Script(outcome="hang")
    batch.create_namespaced_job("default", job_body("f"))
    kube.wait_for(lambda k: pod_states(k, "f") == [("Running", None)])
    batch.delete_namespaced_job("f", "default", propagation_policy="Foreground")
    job = kube.objects[("jobs", "default", "f")]
    assert job["metadata"]["deletionTimestamp"] and "foregroundDeletion" in job["metadata"][
        "finalizers"]  # fmt: skip
    kube.wait_for(lambda k: ("jobs", "default", "f") not in k.objects)
    assert not kube.pods_of("f")


def test_delete_without_policy_orphans_a_jobs_pods(kube, api):
    batch, _ = api
    kube.scripts["o"] = Script(outcome="hang")
    batch.create_namespaced_job("default", job_body("o"))
    kube.wait_for(lambda k: k.pods_of("o"))
    batch.delete_namespaced_job("o", "default")  # batch/v1 default: orphan
    (pod,) = kube.wait_for(lambda k: [p for p in k.pods_of("o")
                                      if not p["metadata"].get("ownerReferences")])  # fmt: skip
    assert pod["status"]["phase"] in ("Pending", "Running")


def test_watch_ends_with_410_gone(kube, api):
    batch, _ = api
    batch.create_namespaced_job("default", job_body("x", suspend=True))
    rv = batch.list_namespaced_job("default").metadata.resource_version
    batch.create_namespaced_job("default", job_body("y", suspend=True))
    kube.expire_watches()  # history compacted past `rv`
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            batch.list_namespaced_job, "default", resource_version=rv, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410


def test_logs_tail_and_follow(kube, api):
    batch, core = api
    kube.scripts["l"] = Script(log=["one", "two", "three"], delay=0.6)
    batch.create_namespaced_job("default", job_body("l"))
    pod = kube.wait_for(lambda k: pod_states(k, "l") == [("Running", None)] and k.pods_of("l"))[0]
    name = pod["metadata"]["name"]
    resp = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False)
    assert list(watch.watch.iter_resp_lines(resp)) == ["one", "two", "three"]
    assert core.read_namespaced_pod_log(name, "default", tail_lines=1) == "three\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log(name, "default", container="sidecar")
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("namespace_labels", "pod", "message"),
    [
        pytest.param(
            {"pod-security.kubernetes.io/enforce": "restricted"},
            {"securityContext": {}},
            'violates PodSecurity "restricted:latest"',
            id="pod-security",
        ),
        pytest.param(
            {},
            {"serviceAccountName": "nobody"},
            'error looking up service account ml/nobody: serviceaccount "nobody" not found',
            id="service-account",
        ),
    ],
)
def test_admission_refuses_pods_and_the_job_says_why(kube, api, namespace_labels, pod, message):
    batch, core = api
    kube.add_namespace("sec", namespace_labels) if namespace_labels else None
    ns = "sec" if namespace_labels else "ml"
    kube.add("serviceaccounts", ns, {"metadata": {"name": "trainer"}})
    batch.create_namespaced_job(ns, job_body("a", pod=pod))
    (event,) = kube.wait_for(lambda k: [o for key, o in k.objects.items() if key[0] == "events"
                                        and o["reason"] == "FailedCreate"])  # fmt: skip
    assert message in event["message"] and event["type"] == "Warning"
    assert not kube.pods_of("a", ns)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, {"metadata": {"name": "direct"}, **job_body(
            "x", pod=pod)["spec"]["template"]})  # fmt: skip
    assert err.value.status == 403 and message in json.loads(err.value.body)["message"]


def test_strict_field_validation_refuses_unknown_fields(kube):
    import json
    import urllib.request

    body = job_body("u")
    body["spec"]["backofLimit"] = 1  # typo
    req = urllib.request.Request(
        f"{kube.url}/apis/batch/v1/namespaces/default/jobs?fieldValidation=Strict",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        method="POST",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400 and "backofLimit" in err.value.read().decode()


def kubectl(kube, *args):
    if not KUBECTL.exists():
        pytest.skip("kubectl not found: run scripts/install-helm.sh")
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), HOME=str(Path(kube.kubeconfig).parent))
    return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env,
                          timeout=30, check=True).stdout  # fmt: skip


def test_kubectl_get_describe_logs(kube, api):
    batch, _ = api
    kube.scripts["bad"] = Script(start="ImagePullBackOff")
    kube.scripts["good"] = Script(log=["epoch 1/1 loss=0.5"])
    batch.create_namespaced_job("default", job_body("bad"))
    batch.create_namespaced_job("default", job_body("good"))
    kube.wait_for(lambda k: _done(k, "good") and pod_states(k, "bad")[0][1] == "ImagePullBackOff")
    pods = kubectl(kube, "get", "pods")
    assert pods.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    status = {line.split()[0].rsplit("-", 1)[0]: line.split()[2] for line in pods.splitlines()[1:]}
    assert status == {"bad": "ImagePullBackOff", "good": "Completed"}
    jobs = kubectl(kube, "get", "jobs")
    assert {line.split()[0]: line.split()[1] for line in jobs.splitlines()[1:]} == {
        "bad": "Running", "good": "Complete"}  # fmt: skip
    bad_pod = kube.pods_of("bad")[0]["metadata"]["name"]
    described = kubectl(kube, "describe", "pod", bad_pod)
    assert "ImagePullBackOff" in described and "Back-off pulling image" in described
    assert kubectl(kube, "logs", "job/good") == "epoch 1/1 loss=0.5\n"
