"""The real helm (and kubectl) against the fake API server: upgrades never touch training."""

from __future__ import annotations

import os
import subprocess

import pytest

from jobs import submit
from tests.fakes.k8s_checks import CHART, ROOT, helm_binary
from tests.fakes.kube_api import FakeKube, Script

pytestmark = pytest.mark.timeout(120)

VALUES = ["--set", "image.repository=europe-docker.pkg.dev/p/imdb/imdb-train",
          "--set", "output=gs://imdb-runs-test/imdb"]  # fmt: skip
CRON = "imdb-train-retrain-lstm"


@pytest.fixture
def kube(tmp_path, monkeypatch):
    fake = FakeKube().start()
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for var, sub in (("HELM_CACHE_HOME", "c"), ("HELM_CONFIG_HOME", "cf"), ("HELM_DATA_HOME", "d")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HOME", str(tmp_path))
    yield fake
    fake.stop()


def helm(*args, check=True):
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=90,
                            env=os.environ)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def kubectl(*args):
    return subprocess.run([str(ROOT / ".tools" / "bin" / "kubectl"), *args], capture_output=True,
                          text=True, timeout=60, check=True).stdout  # fmt: skip


def job_from_cronjob(kube, cron: str, name: str) -> None:
    """What `kubectl create job --from=cronjob/CRON NAME` sends (kubectl itself sends protobuf,
    which the fake decodes for Secrets only): the job template, owned by the CronJob."""
    from kubernetes import client, config

    api = client.BatchV1Api(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
    cj = api.read_namespaced_cron_job(cron, "default")
    owner = client.V1OwnerReference(api_version="batch/v1", kind="CronJob", name=cron,
                                    uid=cj.metadata.uid, controller=True)  # fmt: skip
    meta = client.V1ObjectMeta(name=name, labels=cj.spec.job_template.metadata.labels,
                               annotations={"cronjob.kubernetes.io/instantiate": "manual"},
                               owner_references=[owner])  # fmt: skip
    api.create_namespaced_job(
        "default", client.V1Job(metadata=meta, spec=cj.spec.job_template.spec)
    )


def jobs_of(kube):
    return {k[2]: o["metadata"]["uid"] for k, o in kube.objects.items() if k[0] == "jobs"}


def test_upgrade_changes_only_the_cronjob_and_never_running_training(kube, capsys):
    kube.default_script = Script(outcome="hang")  # training that runs for hours
    helm("install", "imdb-train", str(CHART), *VALUES)
    cron = kube.objects[("cronjobs", "default", CRON)]
    assert cron["spec"]["schedule"] == "0 3 * * 0"
    assert {k[0] for k in kube.objects} >= {"serviceaccounts", "roles", "rolebindings", "secrets"}
    assert not jobs_of(kube)  # the chart itself starts no training

    # Two runs in progress: one from the CronJob (as the NOTES say), one submitted.
    job_from_cronjob(kube, CRON, "imdb-train-lstm-first")
    image, output = VALUES[1].split("=", 1)[1], VALUES[3].split("=", 1)[1]
    assert submit.main(["--run-id", "s1", "--image", f"{image}:0.1.0", "--output", output]) == 0
    kube.wait_for(
        lambda k: (
            sum(
                p["status"].get("phase") == "Running"
                for (r, _, _), p in k.objects.items()
                if r == "pods"
            )
            == 2
        )
    )
    before = jobs_of(kube)
    assert sorted(before) == ["imdb-train-lstm-first", "imdb-train-lstm-s1"]
    mark, rv = len(kube.requests), kube.rv

    helm("upgrade", "imdb-train", str(CHART), *VALUES, "--set", "retrain.schedule=30 4 * * 1")

    during = kube.requests[mark:]
    writes = [(m, p) for m, p, _, _ in during if m in ("POST", "PUT", "PATCH", "DELETE")]
    assert [(m, p) for m, p in writes if "/jobs" in p] == []
    assert ("PATCH", f"/apis/batch/v1/namespaces/default/cronjobs/{CRON}") in writes
    assert jobs_of(kube) == before  # same Jobs, same uids: not deleted, not replaced
    phases = [p["status"]["phase"] for (r, _, _), p in kube.objects.items() if r == "pods"]
    assert phases == ["Running", "Running"]
    # Only the CronJob (and Helm's own release records) changed.
    changed = {(r, o["metadata"]["name"]) for v, t, r, o in kube.events if v > rv and t != "ADDED"
               and r not in ("pods", "jobs", "events")}  # fmt: skip
    assert {c for c in changed if c[0] != "secrets"} == {("cronjobs", CRON)}
    after = kube.objects[("cronjobs", "default", CRON)]
    assert after["spec"]["schedule"] == "30 4 * * 1"
    assert after["metadata"]["uid"] == cron["metadata"]["uid"]  # patched in place


def test_uninstall_removes_the_release_objects(kube):
    helm("install", "imdb-train", str(CHART), *VALUES)
    helm("uninstall", "imdb-train")
    kube.wait_for(lambda k: not [key for key in k.objects if key[0] in (
        "cronjobs", "roles", "rolebindings", "secrets")])  # fmt: skip
    assert [k[2] for k in kube.objects if k[0] == "serviceaccounts"] == ["default", "default"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(VALUES[2:], "image.repository is required: build and push the trainer "
                     "image (make image; make push IMAGE=REGISTRY/imdb-train:TAG)", id="image"),
        pytest.param(VALUES[:2], "output is required: --set output=gs://YOUR-BUCKET/imdb",
                     id="output"),
    ],
)  # fmt: skip
def test_install_without_image_or_output_says_what_to_set(kube, values, message):
    result = helm("install", "imdb-train", str(CHART), *values, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not [k for k in kube.objects if k[0] not in ("namespaces", "serviceaccounts")]


@pytest.mark.parametrize(("outcome", "code"), [("succeed", 0), ("fail", 1)])
def test_helm_test_runs_the_write_check_pod(kube, outcome, code):
    helm("install", "imdb-train", str(CHART), *VALUES)
    kube.scripts["imdb-train-test-write"] = Script(outcome=outcome)
    result = helm("test", "imdb-train", "--timeout", "30s", check=False)
    assert result.returncode == code, result.stdout + result.stderr
    # helm v4 creates hooks with server-side apply.
    (*_, (_, _, query, pod)) = kube.requests_to("PATCH", r"/pods/imdb-train-test-write$")
    assert query["fieldManager"] == ["helm"]
    assert pod["spec"]["serviceAccountName"] == "imdb-train"
    assert pod["spec"]["containers"][0]["args"][-1] == "gs://imdb-runs-test/imdb"
