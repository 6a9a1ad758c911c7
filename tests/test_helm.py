"""The Helm chart: lint, render with default and other values, schema rejects bad values."""

from __future__ import annotations

import pytest

from tests.fakes.k8s_checks import (
    CHART,
    MIN_K8S_VERSION,
    NEWEST_K8S_VERSION,
    helm,
    helm_template,
    restricted_violations,
    validate,
)

pytestmark = pytest.mark.timeout(120)


def by_kind(docs):
    out: dict[str, list] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


REQUIRED = (
    "image.repository=europe-docker.pkg.dev/p/imdb/imdb-train",
    "output=gs://my-bucket/imdb",
    "accelerator=nvidia-l4",
)


def render(*values, release="imdb-train"):
    return helm_template(*REQUIRED, *values, release=release)


def test_lint_strict_is_clean():
    args = [a for v in REQUIRED for a in ("--set", v)]
    result = helm("lint", "--strict", str(CHART), *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("k8s_version", [MIN_K8S_VERSION, NEWEST_K8S_VERSION])
@pytest.mark.parametrize(
    "values",
    [
        pytest.param((), id="defaults"),
        pytest.param(("gpus=0", "tolerations=null"), id="cpu"),
        pytest.param(("queue=team-a",), id="kueue"),
        pytest.param(
            (
                "retrain.enabled=false",
                "submitter.create=false",
                "serviceAccount.gcpServiceAccount=trainer@p.iam.gserviceaccount.com",
            ),
            id="minimal",
        ),
        pytest.param(
            (
                "imagePullSecrets[0].name=regcred",
                "podAnnotations.a=b",
                "podLabels.team=ml",
                "priorityClassName=training",
                "extraEnv[0].name=X",
                "extraEnv[0].value=verbose",
                "extraVolumes[0].name=data",
                "extraVolumes[0].emptyDir.sizeLimit=1Gi",
                "extraVolumeMounts[0].name=data",
                "extraVolumeMounts[0].mountPath=/data",
                "nodeSelector.cloud\\.google\\.com/gke-accelerator=nvidia-l4",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                ".nodeSelectorTerms[0].matchExpressions[0].key=cloud.google.com/gke-spot",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                ".nodeSelectorTerms[0].matchExpressions[0].operator=DoesNotExist",
                "networkPolicy.egress=true",
                "kueuePriorityClass=nightly",
                "queue=team-a",
                "resources.requests.ephemeral-storage=20Gi",
            ),
            id="extras",
        ),
    ],
)
def test_every_rendered_object_is_valid_and_restricted(values, k8s_version):
    docs = render(*values)
    assert docs
    for doc in docs:
        validate(doc, k8s_version)
        assert restricted_violations(doc) == [], doc["metadata"]["name"]


def test_workers_reach_each_other_where_namespaces_deny_by_default():
    from trainer.contract import WORKER_PORT

    (policy,) = by_kind(render())["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: DNS, GCS
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": WORKER_PORT, "protocol": "TCP"}]
    selector = {"app.kubernetes.io/name": "imdb-train", "app.kubernetes.io/component": "trainer"}
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    (cron,) = by_kind(render())["CronJob"]
    pod_labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    (policy,) = by_kind(render("networkPolicy.egress=true"))["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "NetworkPolicy" not in by_kind(render("networkPolicy.enabled=false"))


def test_chart_owns_long_lived_objects_only():
    kinds = by_kind(render())
    assert "Job" not in kinds and "Service" not in kinds  # runs stay out of the upgrade path
    (cron,) = kinds["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert {"Role", "RoleBinding", "ServiceAccount", "Pod"} <= set(kinds)
    (test_pod,) = kinds["Pod"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def pod_of(cron):
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_scheduled_runs_keep_history_and_promote_only_when_not_worse():
    (cron,) = by_kind(render())["CronJob"]
    job = cron["spec"]["jobTemplate"]["spec"]
    assert "ttlSecondsAfterFinished" not in job  # history limits prune, TTL would not wait
    args = pod_of(cron)["containers"][0]["args"]
    assert args[args.index("--tolerance") + 1] == "0"
    assert args[args.index("--run-id") + 1] == "$(IMDB_TRAIN_RUN_ID)"


def test_gpu_pods_select_their_gpu_type_which_is_required():
    pod = pod_of(by_kind(render())["CronJob"][0])
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    args = [a for v in REQUIRED if not v.startswith("accelerator") for a in ("--set", v)]
    missing = helm("template", "x", str(CHART), *args, check=False)
    assert missing.returncode != 0 and "accelerator is required when gpus > 0" in missing.stderr
    cpu = helm("template", "x", str(CHART), *args, "--set", "gpus=0").stdout
    assert "gke-accelerator" not in cpu
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]  # fmt: skip


# Allocatable of the smallest GKE GPU shapes the defaults target (GKE reserves CPU/memory for
# the kubelet and system DaemonSets: about 0.1 CPU and 3.5 GB on these machines).
NODE_SHAPES = {"g2-standard-4": ("3920m", "12Gi"), "n1-standard-4": ("3920m", "11Gi")}


def _cpu(q):
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _gib(q):
    return float(q[:-2]) if q.endswith("Gi") else float(q) / 2**30


@pytest.mark.parametrize("shape", sorted(NODE_SHAPES))
def test_default_requests_fit_gke_gpu_node_shapes(shape):
    cpu, memory = NODE_SHAPES[shape]
    pod = pod_of(by_kind(render())["CronJob"][0])
    requests = pod["containers"][0]["resources"]["requests"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert _cpu(requests["cpu"]) <= _cpu(cpu) - 0.5  # room for GKE's DaemonSets
    assert _gib(requests["memory"]) <= _gib(memory) - 1
    assert shm == {"medium": "Memory", "sizeLimit": "1Gi"}


def test_thread_pools_follow_the_cpu_limit():
    env = {e["name"]: e for e in pod_of(by_kind(render())["CronJob"][0])["containers"][0]["env"]}
    assert env["TF_NUM_INTRAOP_THREADS"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "trainer", "resource": "limits.cpu"}  # fmt: skip


def test_kueue_queue_labels_and_suspends_the_job_template():
    (cron,) = by_kind(render("queue=team-a"))["CronJob"]
    template = cron["spec"]["jobTemplate"]
    assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert template["spec"]["suspend"] is True
    (plain,) = by_kind(render())["CronJob"]
    assert "suspend" not in plain["spec"]["jobTemplate"]["spec"]
    assert "kueue.x-k8s.io/queue-name" not in plain["spec"]["jobTemplate"]["metadata"]["labels"]


def test_pod_extras_land_in_the_pod():
    cron = by_kind(render("podLabels.team=ml", "podAnnotations.a=b", "priorityClassName=hi",
                          "imagePullSecrets[0].name=regcred"))["CronJob"][0]  # fmt: skip
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["annotations"] == {"a": "b"}
    assert template["spec"]["priorityClassName"] == "hi"
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_workload_identity_annotation_and_submitter_token():
    docs = render("serviceAccount.gcpServiceAccount=trainer@p.iam.gserviceaccount.com")
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert sas["imdb-train"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "trainer@p.iam.gserviceaccount.com"
    }
    assert sas["imdb-train"]["automountServiceAccountToken"] is False
    assert sas["imdb-train-submitter"]["automountServiceAccountToken"] is True


def test_the_trainer_service_account_has_one_name_whatever_the_release():
    """The chart, its NOTES and jobs.submit name the same account (a release `nightly` once
    made `nightly-imdb-train`, and the submit command in the NOTES failed)."""
    from jobs.spec import DEFAULT_SERVICE_ACCOUNT

    for release in ("imdb-train", "nightly"):
        docs = render(release=release)
        (cron,) = by_kind(docs)["CronJob"]
        names = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
        assert pod_of(cron)["serviceAccountName"] == DEFAULT_SERVICE_ACCOUNT
        assert DEFAULT_SERVICE_ACCOUNT in names


def test_an_image_pinned_by_digest_renders_repo_at_digest():
    digest = "sha256:" + "ab" * 32
    cpu_digest = "sha256:" + "cd" * 32
    for tag in (digest, "@" + digest):
        docs = render(f"image.tag={tag}", f"tests.image.tag={cpu_digest}")
        (cron,) = by_kind(docs)["CronJob"]
        assert pod_of(cron)["containers"][0]["image"].endswith(f"/imdb-train@{digest}")
        (probe,) = by_kind(docs)["Pod"]
        assert probe["spec"]["containers"][0]["image"].endswith(f"/imdb-train@{cpu_digest}")
    # The CPU image's digest cannot be derived from the GPU image's: it must be given.
    result = helm("template", "imdb-train", str(CHART), "--set", f"image.tag={digest}",
                  *(a for v in REQUIRED for a in ("--set", v)), check=False)  # fmt: skip
    assert "tests.image.tag is required when image.tag is a digest" in result.stderr


def test_helm_test_pulls_the_cpu_image_not_the_gpu_one():
    """The test pod writes one object: the CPU variant (tag + -cpu) serves, a fraction of the
    GPU image's size; a registry of its own can be named."""
    (probe,) = by_kind(render("image.tag=1.2.3"))["Pod"]
    assert probe["spec"]["containers"][0]["image"] == (
        "europe-docker.pkg.dev/p/imdb/imdb-train:1.2.3-cpu"
    )
    (probe,) = by_kind(render("tests.image.repository=mirror/t", "tests.image.tag=v1"))["Pod"]
    assert probe["spec"]["containers"][0]["image"] == "mirror/t:v1"
    assert "nvidia.com/gpu" not in str(probe["spec"]["containers"][0]["resources"])


def test_long_release_names_are_truncated_to_63():
    release = "a-really-long-release-name-that-keeps-going-and-going"
    for d in render("retrain.enabled=false", release=release):
        assert len(d["metadata"]["name"]) <= 63
    result = helm("template", release, str(CHART), *(a for v in REQUIRED for a in ("--set", v)),
                  check=False)  # fmt: skip
    assert "exceeds 52 characters (Job names add 11): set fullnameOverride" in result.stderr


def test_notes_say_how_to_start_and_follow_runs():
    args = [a for v in REQUIRED for a in ("--set", v)]
    out = helm("install", "imdb-train", str(CHART), "--dry-run=client", *args).stdout
    notes = out[out.index("NOTES:") :]
    assert "kubectl create job -n default --from=cronjob/imdb-train-retrain-lstm" in notes
    assert "--output gs://my-bucket/imdb" in notes
    assert "helm test imdb-train -n default" in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param((), "image.repository is required: build and push the trainer image "
                     "(make image; make push IMAGE=REGISTRY/imdb-train:TAG)", id="no-image"),
        pytest.param(("image.repository=r/imdb-train",), "output is required: --set "
                     "output=gs://YOUR-BUCKET/imdb", id="no-output"),
    ],
)  # fmt: skip
def test_required_values_say_what_to_set(values, message):
    result = helm("template", "imdb-train", str(CHART), *(a for v in values for a in ("--set", v)),
                  check=False)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("retrain.models={cnn}", "at '/retrain/models/0': value must be one of 'mean', 'lstm'"),
        ("epochs=0", "at '/epochs': minimum: got 0, want 1"),
        ("batchSize=-64", "at '/batchSize': minimum: got -64, want 1"),
        ("gpus=-1", "at '/gpus': minimum: got -1, want 0"),
        ("epochs=ten", "at '/epochs': got string, want integer"),
        ("output=s3://bucket/x", "at '/output': 's3://bucket/x' does not match pattern"),
        ("output=/data/runs", "at '/output': '/data/runs' does not match pattern"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("resources.limits.memory=16GB", "at '/resources/limits/memory'"),
        ("resources.limits.nvidia\\.com/gpu=1", "at '/resources/limits'"),
        ("serviceAccount.gcpServiceAccount=me", "at '/serviceAccount/gcpServiceAccount'"),
        ("queue=Team_A", "at '/queue'"),
        ("gpu=2", "additional properties 'gpu' not allowed"),
        ("retrain.shedule=x", "at '/retrain': additional properties 'shedule' not allowed"),
        ("imagePullSecrets[0].nam=x", "at '/imagePullSecrets/0'"),
    ],
)
def test_schema_rejects_bad_values(value, message):
    args = [a for v in (*REQUIRED, value) for a in ("--set", v)]
    result = helm("template", "imdb-train", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def _test_pod_command(output):
    (pod,) = by_kind(render(f"output={output}"))["Pod"]
    (c,) = pod["spec"]["containers"]
    return [*c["command"], *c["args"]]


@pytest.mark.timeout(120)
def test_helm_test_script_writes_and_cleans_up(gcs_bucket):
    """The `helm test` pod's own command, run here against the GCS emulator."""
    import os
    import subprocess
    import sys

    from tests.helpers import gcs_client

    output = f"gs://{gcs_bucket}/imdb"
    command = _test_pod_command(output)
    assert command[:2] == ["python", "-c"]
    env = dict(os.environ, PYTHONPATH=str(CHART.parents[1]))
    ok = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, env=env,
                        timeout=90)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert f"wrote and deleted {output}/_helm_test/" in ok.stdout
    client = gcs_client(os.environ["STORAGE_EMULATOR_HOST"])
    assert list(client.list_blobs(gcs_bucket)) == []  # nothing left behind
    # A bucket the identity cannot write (here: one that does not exist) fails the test pod.
    bad = [sys.executable, *_test_pod_command("gs://no-such-bucket-imdb/x")[1:]]
    env["IMDB_TRAIN_GCS_DEADLINE"] = "5"
    failed = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=90)
    assert failed.returncode != 0
