"""One definition of a Job's settings: JobSpec's fields, which the chart's values.yaml follows.

jobs.submit's flags, defaults and help are generated from JobSpec; every chart value that
shapes a training pod or Job is one of its fields (metadata "chart"), with the same default,
or is named here as the chart's alone. tests/test_k8s_drift.py renders both with the same
settings and compares the objects.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from jobs import spec as specs
from jobs.submit import submit
from tests.fakes.k8s_checks import CHART

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# Chart values with no JobSpec field, and why.
CHART_ONLY = {
    "nameOverride", "fullnameOverride", "global",  # Helm naming
    "serviceAccount.create", "serviceAccount.gcpServiceAccount", "serviceAccount.annotations",
    "submitter", "tests", "networkPolicy",  # objects beside the Jobs
    "retrain",  # the schedule (its extraArgs is a JobSpec field)
    # Free-form Kubernetes objects for what a user adds; jobs.submit takes none of them.
    "affinity", "extraEnv", "extraVolumes", "extraVolumeMounts",
}  # fmt: skip
# Fields a test passes (required ones), so their defaults are not compared.
GIVEN = {"image": "imdb-train:0.1.0", "output": "gs://my-bucket/x", "accelerator": "nvidia-l4"}


def chart_value(path: str):
    node = VALUES
    for key in path.split("."):
        node = node[key]
    return node


def chart_paths(node: dict, prefix: str = "") -> set[str]:
    """Every leaf path of values.yaml (a map whose keys are settings counts as a leaf)."""
    out = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("requests", "limits"):
            out |= chart_paths(value, path + ".")
        else:
            out.add(path)
    return out


def mapped() -> dict[str, str]:
    return {f.name: f.metadata["chart"] for f in dataclasses.fields(specs.JobSpec)
            if f.metadata.get("chart")}  # fmt: skip


def test_every_chart_value_is_a_jobspec_setting_or_the_charts_own():
    chart_keys = chart_paths(VALUES)
    owned = [*CHART_ONLY, *mapped().values()]

    def owns(o: str, p: str) -> bool:
        return p == o or p.startswith(o + ".") or o.startswith(p + ".")

    covered = {p for p in chart_keys if any(owns(o, p) for o in owned)}
    assert chart_keys - covered == set(), "chart values with no JobSpec field"


@pytest.mark.parametrize("field", sorted(set(mapped()) - set(GIVEN)))
def test_the_chart_default_is_the_jobspecs(field):
    """values.yaml's default, read as JobSpec reads a value, is JobSpec's default."""
    path = mapped()[field]
    if path == "resources.requests.ephemeral-storage":
        raw = VALUES["resources"]["requests"].get("ephemeral-storage")
    else:
        raw = chart_value(path)
    if field == "service_account":
        # The chart's empty name means the one name of the trainer's account.
        raw = raw or specs.DEFAULT_SERVICE_ACCOUNT
    from_chart = specs.JobSpec(model="lstm", run_id="r1", **GIVEN, **{field: raw})
    default = specs.JobSpec(model="lstm", run_id="r1", **GIVEN)
    assert getattr(from_chart, field) == getattr(default, field), (
        f"values.yaml {path} = {raw!r}, JobSpec.{field} defaults to {getattr(default, field)!r}"
    )


def test_submit_flags_are_the_jobspec_fields():
    import inspect

    params = inspect.signature(submit).parameters
    for f in dataclasses.fields(specs.JobSpec):
        assert params[f.name].default == f.default, f.name
        if f.name != "model":  # submit's own: it also takes `all`
            assert f.metadata["help"] in submit.__doc__, f.name
