"""docs/kueue.yaml: the queues the docs show cover what the chart's pods request."""

from __future__ import annotations

import yaml

from tests.fakes.k8s_checks import ROOT, helm_template

QUEUES = ROOT / "docs" / "kueue.yaml"


def docs_by_kind():
    return {d["kind"]: d for d in yaml.safe_load_all(QUEUES.read_text()) if d}


def test_queues_reference_each_other():
    kinds = docs_by_kind()
    assert set(kinds) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    from jobs.names import KUEUE_GROUP, KUEUE_VERSION

    # The version jobs.status reads Workloads at: on a Kueue without it, status says so.
    assert all(d["apiVersion"] == f"{KUEUE_GROUP}/{KUEUE_VERSION}" for d in kinds.values())
    cq = kinds["ClusterQueue"]
    assert kinds["LocalQueue"]["spec"]["clusterQueue"] == cq["metadata"]["name"]
    (group,) = cq["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    assert flavor["name"] == kinds["ResourceFlavor"]["metadata"]["name"]
    assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]


def test_queues_cover_every_resource_the_chart_requests():
    kinds = docs_by_kind()
    (group,) = kinds["ClusterQueue"]["spec"]["resourceGroups"]
    values = ("image.repository=r/imdb-train", "output=gs://b-1/x", "queue=imdb-train",
              "accelerator=nvidia-l4")  # fmt: skip
    (cron,) = [d for d in helm_template(*values) if d["kind"] == "CronJob"]
    job = cron["spec"]["jobTemplate"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == kinds["LocalQueue"][
        "metadata"]["name"]  # fmt: skip
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    asked = set(resources["requests"]) | set(resources["limits"])
    # Kueue refuses a workload asking for a resource its ClusterQueue does not cover.
    assert asked <= set(group["coveredResources"])
    flavor = kinds["ResourceFlavor"]["spec"]
    assert flavor["nodeLabels"]["cloud.google.com/gke-accelerator"]


def test_queues_cover_the_autopilot_recipe(capsys):
    """The Autopilot recipe requests ephemeral-storage: a ClusterQueue without it never
    admits the Job (Kueue: resource unavailable), and the CronJob replaces it every tick."""
    from tests.helpers import dry_run

    (group,) = docs_by_kind()["ClusterQueue"]["spec"]["resourceGroups"]
    values = ("image.repository=r/imdb-train", "output=gs://b-1/x", "queue=imdb-train",
              "accelerator=nvidia-l4", "resources.requests.ephemeral-storage=25Gi")  # fmt: skip
    (cron,) = [d for d in helm_template(*values) if d["kind"] == "CronJob"]
    pods = [cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    pods += [d["spec"]["template"]["spec"] for d in dry_run(
        capsys,         "--model", "lstm", "--queue", "imdb-train", "--accelerator", "nvidia-l4",
        "--ephemeral-storage", "25Gi") if d["kind"] == "Job"]  # fmt: skip
    for pod in pods:
        resources = pod["containers"][0]["resources"]
        asked = set(resources.get("requests", {})) | set(resources.get("limits", {}))
        assert "ephemeral-storage" in asked
        assert asked <= set(group["coveredResources"]), asked - set(group["coveredResources"])
