"""jobs.doctor and strict creates on the real control plane (no nodes: Node objects stand for
node pools): an unknown JobSet field, a ClusterQueue without ephemeral-storage, an
accelerator no node has, a missing ServiceAccount, and a cluster where all is well."""

from __future__ import annotations

import pytest

from jobs import doctor, submit
from jobs.names import JOBSET_GROUP, JOBSET_MIN_RELEASE, JOBSET_PLURAL
from jobs.spec import EXAMPLE_IMAGE
from jobs.values import ACCELERATOR_LABEL
from tests.apiserver import add_node, api_client, until, without_property
from trainer import contract

NAMESPACE = "default"
ACCELERATOR = "nvidia-l4"
QUEUE, FULL_QUEUE, SHORT_QUEUE = "team", "full", "short"


def _kueue(state, body: dict, namespace: str | None = None) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client(state))
    plural = body["kind"].lower() + "s"
    if namespace:
        custom.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", namespace, plural,
                                               body)  # fmt: skip
    else:
        custom.create_cluster_custom_object("kueue.x-k8s.io", "v1beta2", plural, body)


def _cluster_queue(name: str, resources: list[str]) -> dict:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": resources,
            "flavors": [{"name": "default", "resources": [
                {"name": r, "nominalQuota": "100"} for r in resources]}],
        }]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def cluster(apiserver):
    populate(apiserver)
    return apiserver


def populate(apiserver) -> None:
    """One L4 node, the trainer's ServiceAccount, and two queues: one covering every resource
    the Job asks for, one without ephemeral-storage (docs/kueue.yaml before the fix)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client(apiserver))
    add_node(apiserver, "gpu-l4-0", {ACCELERATOR_LABEL: ACCELERATOR},
             {"cpu": "4", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "1"})  # fmt: skip
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="imdb-train")))  # fmt: skip
    _kueue(apiserver, _cluster_queue(FULL_QUEUE, ["cpu", "memory", "ephemeral-storage",
                                                  "nvidia.com/gpu"]))  # fmt: skip
    _kueue(apiserver, _cluster_queue(SHORT_QUEUE, ["cpu", "memory", "nvidia.com/gpu"]))
    for name, cq in ((QUEUE, FULL_QUEUE), ("short", SHORT_QUEUE)):
        _kueue(apiserver, {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                           "metadata": {"name": name, "namespace": NAMESPACE},
                           "spec": {"clusterQueue": cq}}, NAMESPACE)  # fmt: skip


def _doctor(capsys, *flags: str) -> tuple[int, str, str]:
    code = doctor.main([
        "--model", "lstm", "--image", EXAMPLE_IMAGE, "--output", "/runs/imdb",
        "--namespace", NAMESPACE, "--accelerator", ACCELERATOR, "--ephemeral-storage", "5Gi",
        *flags,
    ])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line[5:].startswith(f"{name}: "))


def test_a_cluster_where_all_is_well_exits_0(cluster, capsys):
    code, out, err = _doctor(capsys, "--queue", QUEUE, "--runtime", "jobset", "--workers", "2")
    assert code == contract.EXIT_OK, out + err
    assert "FAIL" not in out
    assert _line(out, "dry run").startswith("ok ")
    assert "jobset/imdb-train-lstm-" in _line(out, "dry run")
    assert _line(out, "queue").startswith("ok ") and "ephemeral-storage" in _line(out, "queue")
    assert _line(out, "accelerator").startswith("ok ") and "gpu-l4-0" in out
    assert _line(out, "service account").startswith("ok ")
    assert _line(out, "jobset").startswith("ok ") and _line(out, "kueue").startswith("ok ")
    assert "would run" in out


def test_a_queue_without_ephemeral_storage_is_the_blocker(cluster, capsys):
    code, out, err = _doctor(capsys, "--queue", "short")
    assert code == contract.EXIT_BAD_INPUT, out + err
    line = _line(out, "queue")
    assert line.startswith("FAIL") and f"ClusterQueue {SHORT_QUEUE}" in line
    assert "does not cover ephemeral-storage" in line
    assert "blocked by queue" in err


def test_an_accelerator_no_node_has_is_the_blocker(cluster, capsys):
    code, out, err = _doctor(capsys, "--accelerator", "nvidia-tesla-t4")
    assert code == contract.EXIT_BAD_INPUT, out + err
    line = _line(out, "accelerator")
    assert line.startswith("FAIL") and f"{ACCELERATOR_LABEL}=nvidia-tesla-t4" in line
    assert "blocked by accelerator" in err


def test_more_gpus_than_any_node_has_is_the_blocker(cluster, capsys):
    code, out, _ = _doctor(capsys, "--gpus", "2")
    assert code == contract.EXIT_BAD_INPUT
    assert "none with 2 allocatable GPUs" in _line(out, "accelerator")


def test_a_missing_service_account_is_the_blocker(cluster, capsys):
    code, out, err = _doctor(capsys, "--service-account", "nobody")
    assert code == contract.EXIT_BAD_INPUT, out + err
    line = _line(out, "service account")
    assert line.startswith("FAIL") and "nobody does not exist in namespace default" in line


@pytest.fixture
def old_jobset(cluster):
    """The JobSet CRD as a release before v0.10.0 has it: no onJobFailureMessagePatterns."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client(cluster))
    name = f"{JOBSET_PLURAL}.{JOBSET_GROUP}"
    original = ext.read_custom_resource_definition(name)
    camel = client.ApiClient().sanitize_for_serialization(original.spec.versions)
    old = [{**v, "schema": without_property(v["schema"], "onJobFailureMessagePatterns")}
           for v in camel]  # fmt: skip
    ext.patch_custom_resource_definition(name, {"spec": {"versions": old}})
    probe = ["--runtime", "jobset", "--workers", "2"]
    until("the older JobSet schema", lambda: doctor.main(_flags(probe)) != 0)
    yield cluster
    ext.patch_custom_resource_definition(name, {"spec": {"versions": camel}})
    until("the JobSet schema back", lambda: doctor.main(_flags(probe)) == 0)


def _flags(extra: list[str]) -> list[str]:
    return ["--model", "lstm", "--image", EXAMPLE_IMAGE, "--output", "/runs/imdb",
            "--namespace", NAMESPACE, "--accelerator", ACCELERATOR, *extra]  # fmt: skip


def test_a_jobset_field_the_server_does_not_know_is_refused(old_jobset, capsys):
    capsys.readouterr()
    code, out, err = _doctor(capsys, "--runtime", "jobset", "--workers", "2")
    assert code == contract.EXIT_BAD_INPUT, out + err
    dry = _line(out, "dry run")
    assert dry.startswith("FAIL") and f"older than {JOBSET_MIN_RELEASE}" in dry
    assert "onJobFailureMessagePatterns" in dry
    assert _line(out, "jobset").startswith("FAIL")
    # jobs.submit itself creates with strict validation: refused, nothing created.
    assert submit.main(_flags(["--runtime", "jobset", "--workers", "2"])) == 1
    assert f"the installed JobSet is older than {JOBSET_MIN_RELEASE}" in capsys.readouterr().err
    from kubernetes import client

    jobsets = client.CustomObjectsApi(api_client(old_jobset)).list_namespaced_custom_object(
        JOBSET_GROUP, "v1alpha2", NAMESPACE, JOBSET_PLURAL)  # fmt: skip
    assert jobsets["items"] == []


def test_the_bucket_is_probed_with_the_users_credentials(cluster, capsys, gcs_bucket):
    code, out, err = _doctor(capsys, "--output", f"gs://{gcs_bucket}/imdb")
    assert code == contract.EXIT_OK, out + err
    assert _line(out, "bucket").startswith(f"ok   bucket: gs://{gcs_bucket}/imdb writable")
    assert "needs roles/storage.objectUser" in _line(out, "service account")
    code, out, err = _doctor(capsys, "--output", "gs://no-such-bucket-28c/imdb")
    assert code == contract.EXIT_BAD_INPUT, out + err
    assert _line(out, "bucket").startswith("FAIL bucket:") and "no-such-bucket-28c" in out


def test_an_api_server_that_does_not_answer_is_an_outage(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    code, out, err = _doctor(capsys, "--kubeconfig", str(kubeconfig))
    assert code == contract.EXIT_PREEMPTED, out + err
    assert out.splitlines()[0].startswith("FAIL api server: no answer")
    assert len(out.splitlines()) == 1  # nothing else can be asked


def test_a_worker_groups_service_and_job_are_both_dry_run(cluster, capsys):
    code, out, err = _doctor(capsys, "--workers", "2", "--runtime", "job")
    assert code == contract.EXIT_OK, out + err
    dry = _line(out, "dry run")
    assert dry.startswith("ok ") and "service/imdb-train-lstm-" in dry and ", job/" in dry


@pytest.fixture
def autopilot(cluster):
    """The API group only GKE Autopilot serves (a CRD of its allowlists), for one test."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client(cluster))
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"allowlistedworkloads.{doctor.AUTOPILOT_GROUP}"},
        "spec": {"group": doctor.AUTOPILOT_GROUP, "scope": "Cluster", "names": {
            "plural": "allowlistedworkloads", "singular": "allowlistedworkload",
            "kind": "AllowlistedWorkload"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object"}}}]},
    })  # fmt: skip
    apis = client.ApisApi(api_client(cluster))

    def served() -> bool:
        return any(g.name == doctor.AUTOPILOT_GROUP for g in apis.get_api_versions().groups)

    until("the Autopilot group served", served)
    yield cluster
    ext.delete_custom_resource_definition(f"allowlistedworkloads.{doctor.AUTOPILOT_GROUP}")
    until("the Autopilot group gone", lambda: not served())


def test_autopilot_needs_no_node_but_takes_only_its_gpu_counts(autopilot, capsys):
    capsys.readouterr()
    code, out, _ = _doctor(capsys, "--accelerator", "nvidia-tesla-t4")
    assert code == contract.EXIT_OK, out
    assert _line(out, "accelerator").startswith("ok   accelerator: Autopilot")
    code, out, _ = _doctor(capsys, "--gpus", "3", "--batch-size", "96")
    assert code == contract.EXIT_BAD_INPUT
    assert "Autopilot takes 1, 2, 4, 8 GPUs of nvidia-l4 per pod, not 3" in out
