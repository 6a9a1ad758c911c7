"""The same objects three times: k8s/*.yaml, `helm template` and `jobs.submit --dry-run`.

The chart owns the ServiceAccounts, RBAC and CronJob; submit makes the Jobs. Compared as parsed
objects. Only two labels may differ, by design: Helm's `helm.sh/chart` and
`app.kubernetes.io/managed-by` (Helm vs imdb-train-submit).
"""

from __future__ import annotations

import pytest
import yaml

from jobs import render
from tests.fakes.k8s_checks import ROOT, helm_template
from tests.helpers import dry_run

K8S = ROOT / "k8s"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
# The example values k8s/ is rendered with (the chart requires both; submit has these defaults).
EXAMPLE = (
    "image.repository=imdb-train",
    "output=gs://imdb-train-runs/imdb",
    "accelerator=nvidia-l4",
    "tests.enabled=false",
)


def normalize(obj):
    if isinstance(obj, dict):
        return {k: normalize(v) for k, v in obj.items() if k not in HELM_ONLY_LABELS}
    if isinstance(obj, list):
        return [normalize(v) for v in obj]
    return obj


def keyed(docs):
    return {(d["kind"], d["metadata"]["name"]): normalize(d) for d in docs}


def k8s_docs():
    return [
        d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d
    ]


def test_k8s_dir_is_what_jobs_render_writes(tmp_path):
    assert render.main(["--out-dir", str(tmp_path)]) == 0
    for path in sorted(K8S.glob("*.yaml")):
        assert (tmp_path / path.name).read_text() == path.read_text(), (
            f"{path.name} is stale: run python -m jobs.render"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in K8S.glob("*.yaml"))


def test_render_check_detects_drift(tmp_path, capsys):
    render.main(["--out-dir", str(tmp_path)])
    (tmp_path / "job-lstm.yaml").write_text("# edited\n")
    assert render.main(["--out-dir", str(tmp_path), "--check"]) == 1
    assert "job-lstm.yaml" in capsys.readouterr().err


def test_helm_example_equals_k8s_dir_without_jobs():
    helm = keyed(helm_template(*EXAMPLE))
    plain = keyed(d for d in k8s_docs() if d["kind"] != "Job")
    assert sorted(helm) == sorted(plain)
    for key in helm:
        assert helm[key] == plain[key], key


def test_dry_run_equals_k8s_jobs(capsys):
    plain = keyed(d for d in k8s_docs() if d["kind"] == "Job")
    assert keyed(dry_run(capsys, "--model", "all", "--run-id", "r1")) == plain


def scheduled_pod(cronjob):
    """The CronJob's pod spec without what only scheduled runs have (run id from the Job name,
    promotion tolerance 0, a seed per run), to compare with a submitted Job's."""
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    i = args.index("--tolerance")
    assert args[i : i + 4] == ["--tolerance", "0", "--seed", "-1"]
    c["args"] = args[:i] + args[i + 4 :]
    c["args"][c["args"].index("--run-id") + 1] = "RUN"
    c["env"] = [e for e in c["env"] if e["name"] != "IMDB_TRAIN_RUN_ID"]
    return pod


def submitted_pod(job):
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    c["args"][c["args"].index("--run-id") + 1] = "RUN"
    return pod


@pytest.mark.parametrize(
    ("helm_values", "submit_flags"),
    [
        pytest.param([], ["--model", "lstm"], id="defaults"),
        pytest.param(
            ["retrain.models={mean}", "gpus=0", "tolerations=null"],
            ["--model", "mean", "--gpus", "0"],
            id="cpu",
        ),
        pytest.param(
            ["epochs=3", "batchSize=128", "output=gs://my-bucket/x",
             "data=gs://my-bucket/data/aclImdb_v1.tar.gz", "retrain.extraArgs={--min-accuracy=0.8}",
             "nodeSelector.cloud\\.google\\.com/gke-accelerator=nvidia-l4"],
            ["--model", "lstm", "--epochs", "3", "--batch-size", "128",
             "--output", "gs://my-bucket/x", "--data", "gs://my-bucket/data/aclImdb_v1.tar.gz",
             "--extra-args=--min-accuracy=0.8",
             "--node-selector", "cloud.google.com/gke-accelerator=nvidia-l4"],
            id="training-flags",
        ),
        pytest.param(["queue=team-a", "kueuePriorityClass=nightly"],
                     ["--model", "lstm", "--queue", "team-a", "--kueue-priority-class", "nightly"],
                     id="kueue"),
        pytest.param(
            ["priorityClassName=batch-low", "podAnnotations.team=nlp", "podLabels.cost=ml",
             "imagePullSecrets[0].name=regcred", "image.pullPolicy=Always",
             "terminationGracePeriodSeconds=60", "tmpSizeLimit=2Gi", "cacheSizeLimit=3Gi",
             "shmSizeLimit=2Gi", "resources.requests.ephemeral-storage=20Gi",
             "activeDeadlineSeconds=3600", "backoffLimit=1"],
            ["--model", "lstm", "--priority-class-name", "batch-low", "--pod-annotations",
             "team=nlp", "--pod-labels", "cost=ml", "--image-pull-secrets", "regcred",
             "--image-pull-policy", "Always", "--termination-grace-period-seconds", "60",
             "--tmp-size-limit", "2Gi", "--cache-size-limit", "3Gi", "--shm-size-limit", "2Gi",
             "--ephemeral-storage", "20Gi", "--active-deadline-seconds", "3600",
             "--backoff-limit", "1"],
            id="pod-and-job-settings",
        ),
    ],
)  # fmt: skip
def test_chart_cronjob_and_submit_make_the_same_pod(capsys, helm_values, submit_flags):
    (cron,) = [d for d in helm_template(*EXAMPLE, *helm_values) if d["kind"] == "CronJob"]
    (job,) = dry_run(capsys, *submit_flags, "--run-id", "r1")
    assert normalize(scheduled_pod(cron)) == normalize(submitted_pod(job))
    # The Job's own settings too (a scheduled Job has no TTL: the history limits prune it).
    scheduled = {k: v for k, v in cron["spec"]["jobTemplate"]["spec"].items() if k != "template"}
    submitted = {k: v for k, v in job["spec"].items()
                 if k not in ("template", "ttlSecondsAfterFinished")}  # fmt: skip
    assert scheduled == submitted
    # Kueue: the same queue label and suspension on the chart's scheduled Jobs and submit's.
    template = cron["spec"]["jobTemplate"]
    for key in ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class"):
        assert template["metadata"]["labels"].get(key) == job["metadata"]["labels"].get(key)
    assert template["spec"].get("suspend") == job["spec"].get("suspend")
