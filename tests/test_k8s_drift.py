"""The same objects three times: k8s/*.yaml, `helm template` and `jobs.submit --dry-run`.

Compared as parsed objects. Only two labels may differ, by design: Helm's `helm.sh/chart` and
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


def test_helm_defaults_equal_k8s_dir():
    helm = keyed(helm_template())
    plain = keyed(k8s_docs())
    assert sorted(helm) == sorted(plain)
    for key in helm:
        assert helm[key] == plain[key], key


def test_dry_run_equals_k8s_jobs(capsys):
    plain = keyed(d for d in k8s_docs() if d["kind"] == "Job")
    assert keyed(dry_run(capsys, "--model", "all", "--run-id", "r1")) == plain


@pytest.mark.parametrize(
    ("helm_values", "submit_flags"),
    [
        pytest.param(
            ["models={lstm}", "workers=2", "gpus=2"],
            ["--model", "lstm", "--workers", "2", "--gpus", "2"],
            id="indexed",
        ),
        pytest.param(
            ["models={mean}", "gpus=0", "nodeSelector=null", "tolerations=null"],
            ["--model", "mean", "--gpus", "0"],
            id="cpu",
        ),
        pytest.param(
            ["runId=nightly-7", "epochs=3", "batchSize=128", "output=gs://my-bucket/x",
             "data=/data/aclImdb_v1.tar.gz", "extraArgs={--promote}"],
            ["--model", "all", "--run-id", "nightly-7", "--epochs", "3", "--batch-size", "128",
             "--output", "gs://my-bucket/x", "--data", "/data/aclImdb_v1.tar.gz",
             "--extra-args=--promote"],
            id="training-flags",
        ),
    ],
)  # fmt: skip
def test_helm_and_submit_agree_beyond_defaults(capsys, helm_values, submit_flags):
    if "--run-id" not in submit_flags:
        submit_flags = [*submit_flags, "--run-id", "r1"]
    helm = keyed(d for d in helm_template(*helm_values) if d["kind"] in ("Job", "Service"))
    assert helm == keyed(dry_run(capsys, *submit_flags))
