"""The Helm chart: lint, render with default and other values, schema rejects bad values."""

from __future__ import annotations

import pytest
import yaml

from tests.fakes.k8s_checks import CHART, helm, helm_template, restricted_violations, validate

pytestmark = pytest.mark.timeout(120)


def by_kind(docs):
    out: dict[str, list] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_lint_strict_is_clean():
    result = helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((), id="defaults"),
        pytest.param(("output=gs://my-bucket/imdb",), id="output"),
        pytest.param(("workers=2", "gpus=2", "models={lstm}"), id="multi-worker"),
        pytest.param(("gpus=0", "nodeSelector=null", "tolerations=null"), id="cpu"),
        pytest.param(
            (
                "retrain.enabled=false",
                "submitter.create=false",
                "serviceAccount.gcpServiceAccount=trainer@p.iam.gserviceaccount.com",
            ),
            id="minimal",
        ),
        pytest.param(("runId=12345", "ttlSecondsAfterFinished=null"), id="numeric-run-id"),
    ],
)
def test_every_rendered_object_is_valid_and_restricted(values):
    docs = helm_template(*values)
    assert docs
    for doc in docs:
        validate(doc)
        assert restricted_violations(doc) == [], doc["metadata"]["name"]


def test_default_render_has_a_job_per_model_and_the_cronjob():
    kinds = by_kind(helm_template())
    jobs = {j["metadata"]["name"]: j for j in kinds["Job"]}
    assert sorted(jobs) == ["imdb-train-lstm-r1", "imdb-train-mean-r1"]
    for name, job in jobs.items():
        (c,) = job["spec"]["template"]["spec"]["containers"]
        assert c["args"][:2] == ["--model", name.split("-")[2]]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (cron,) = kinds["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert {"Role", "RoleBinding", "ServiceAccount"} <= set(kinds)
    assert "Service" not in kinds


def test_job_name_follows_the_run_id():
    # runId defaults to r<revision>, so an upgrade makes a new Job (templates are immutable).
    names = [j["metadata"]["name"] for j in by_kind(helm_template("runId=nightly-7"))["Job"]]
    assert names == ["imdb-train-mean-nightly-7", "imdb-train-lstm-nightly-7"]


def test_output_flows_into_args():
    (job,) = by_kind(helm_template("models={mean}", "output=gs://my-bucket/imdb"))["Job"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--output") + 1] == "gs://my-bucket/imdb"


def test_workers_render_an_indexed_job_and_headless_service():
    kinds = by_kind(helm_template("workers=3", "gpus=2", "batchSize=96", "models={lstm}"))
    (job,), (svc,) = kinds["Job"], kinds["Service"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"] == job["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["IMDB_TRAIN_WORKER_HOSTS"].split(",") == [
        f"imdb-train-lstm-r1-{i}.imdb-train-lstm-r1:2222" for i in range(3)
    ]


def test_workload_identity_annotation():
    sa = next(
        d
        for d in helm_template("serviceAccount.gcpServiceAccount=trainer@p.iam.gserviceaccount.com")
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "imdb-train"
    )
    assert sa["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "trainer@p.iam.gserviceaccount.com"
    }


def test_long_release_names_are_truncated_to_63():
    release = "a-really-long-release-name-that-keeps-going-and-going"
    out = helm(
        "template", release, str(CHART), "--set-json", "models=[]", "--set", "retrain.enabled=false"
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert docs
    for d in docs:
        assert len(d["metadata"]["name"]) <= 63
    # Job names add -<model>-<runId>: too long is an error with advice, not a broken object.
    result = helm("template", release, str(CHART), check=False)
    assert "is longer than 63 characters: shorten runId or fullnameOverride" in result.stderr


def test_too_long_job_name_fails_with_advice():
    result = helm(
        "template",
        "imdb-train",
        str(CHART),
        "--set",
        "runId=" + "a" * 40,
        "--set",
        "fullnameOverride=" + "b" * 30,
        check=False,
    )
    assert result.returncode != 0
    assert "shorten runId or fullnameOverride" in result.stderr


def test_notes_tell_where_results_land():
    out = helm(
        "install",
        "imdb-train",
        str(CHART),
        "--dry-run=client",
        "--set",
        "output=gs://my-bucket/imdb",
    ).stdout
    notes = out[out.index("NOTES:") :]
    assert "python -m jobs.status --namespace default --run-id r1" in notes
    assert "gs://my-bucket/imdb/lstm/r1/" in notes
    assert "WARNING" not in notes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("models={cnn}", "at '/models/0': value must be one of 'mean', 'lstm'"),
        ("epochs=0", "at '/epochs': minimum: got 0, want 1"),
        ("batchSize=-64", "at '/batchSize': minimum: got -64, want 1"),
        ("workers=0", "at '/workers': minimum: got 0, want 1"),
        ("gpus=-1", "at '/gpus': minimum: got -1, want 0"),
        ("epochs=ten", "at '/epochs': got string, want integer"),
        ("output=", "at '/output': '' does not match pattern"),
        ("output=s3://bucket/x", "at '/output': 's3://bucket/x' does not match pattern"),
        ("output=null", "missing property 'output'"),
        ("runId=Bad_Id", "at '/runId'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("resources.limits.memory=16GB", "at '/resources/limits/memory'"),
        ("retrain.models={foo}", "at '/retrain/models/0': value must be one of 'mean', 'lstm'"),
        ("serviceAccount.gcpServiceAccount=me", "at '/serviceAccount/gcpServiceAccount'"),
        ("unknownKey.x=1", None),  # top level stays open for subchart-style globals
    ],
)
def test_schema_rejects_bad_values(value, message):
    result = helm("template", "imdb-train", str(CHART), "--set", value, check=False)
    if message is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr
