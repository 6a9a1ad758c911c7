"""Settings valid one by one, invalid together: jobs.submit refuses them with one line, and
whatever it would print with --dry-run the real API server accepts (its server-side dry run
of each object is the judge)."""

from __future__ import annotations

import pytest
import yaml

from jobs import submit
from jobs.spec import EXAMPLE_IMAGE
from jobs.values import GKE_ACCELERATORS, GKE_GPU_COUNTS
from tests.apiserver import api_client
from trainer import contract

BASE = {"image": EXAMPLE_IMAGE, "output": "/runs/imdb", "namespace": "default",
        "accelerator": "nvidia-l4"}  # fmt: skip

# (settings, what our refusal names, or None where the server must accept the dry run).
TABLE = [
    ({"cpu": "5", "cpu_limit": "4"}, "cpu request must be at most its limit"),
    ({"cpu": "4001m", "cpu_limit": "4"}, "cpu request must be at most its limit"),
    ({"cpu": "4", "cpu_limit": "4000m"}, None),
    ({"cpu": "500m", "cpu_limit": "1"}, None),
    ({"cpu": "8", "cpu_limit": ""}, None),
    ({"cpu": "", "cpu_limit": "2"}, None),
    ({"memory": "20Gi", "memory_limit": "10Gi"}, "memory request must be at most its limit"),
    ({"memory": "10241Mi", "memory_limit": "10Gi"}, "memory request must be at most its limit"),
    ({"memory": "10Gi", "memory_limit": "10240Mi"}, None),
    ({"memory": "1e9", "memory_limit": "1G"}, None),
    ({"memory": "2G", "memory_limit": "1Gi"}, "memory request must be at most its limit"),
    ({"memory": "", "memory_limit": "4Gi"}, None),
    ({"ephemeral_storage": "50Gi"}, None),
    ({"gpus": 0, "cpu": "3", "cpu_limit": "2"}, "cpu request must be at most its limit"),
    ({"gpus": 9, "batch_size": 72}, "at most 8 GPUs per node"),
    ({"gpus": 3, "batch_size": 96}, None),  # Standard fits it on a 4-GPU node
    ({"gpus": 2, "batch_size": 64}, None),
    ({"gpus": 8, "batch_size": 64}, None),
    ({"gpus": 5, "accelerator": "nvidia-tesla-t4", "batch_size": 80}, "at most 4 GPUs"),
    ({"gpus": 16, "accelerator": "nvidia-a100-80gb", "batch_size": 64}, "at most 8 GPUs"),
    ({"gpus": 16, "accelerator": "nvidia-tesla-a100", "batch_size": 64}, None),
    ({"gpus": 8, "accelerator": "nvidia-h100-mega-80gb"}, None),
    ({"workers": 4, "runtime": "jobset"}, None),
    ({"workers": 3, "runtime": "job", "batch_size": 63}, None),
    ({"workers": 2, "queue": "team", "cpu": "3", "cpu_limit": "3"}, None),
    # An Indexed Job's 100,000 completions: the global batch (at most 65,536) refuses first.
    ({"workers": 100_001, "batch_size": 100_001}, "batch-size 100001: expected at most 65536"),
]  # fmt: skip


def _id(row) -> str:
    return ",".join(f"{k}={v}" for k, v in row[0].items())


def _argv(settings: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in {**BASE, **settings}.items()]


def server_dry_run(state, doc: dict) -> None:
    """Create one printed object (the YAML's dict, as it is) with dryRun=All and strict field
    validation; raises ApiException on a refusal."""
    from kubernetes import client

    api, ns = api_client(state), doc["metadata"]["namespace"]
    options = {"dry_run": "All", "field_validation": "Strict"}
    if doc["kind"] == "Job":
        client.BatchV1Api(api).create_namespaced_job(ns, doc, **options)
    elif doc["kind"] == "Service":
        client.CoreV1Api(api).create_namespaced_service(ns, doc, **options)
    else:
        group, version = doc["apiVersion"].split("/")
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            group, version, ns, doc["kind"].lower() + "s", doc, **options)  # fmt: skip


@pytest.mark.parametrize(("settings", "refusal"), TABLE, ids=[_id(r) for r in TABLE])
def test_every_dry_run_is_refused_by_us_or_accepted_by_the_server(
    apiserver,
    capsys,
    settings,
    refusal,
):
    from kubernetes.client.exceptions import ApiException

    capsys.readouterr()
    code = submit.main(["--dry-run", "--model", "lstm", *_argv(settings)])
    out, err = capsys.readouterr()
    if code == contract.EXIT_BAD_INPUT:
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert refusal is not None, f"refused, though the server accepts it: {err}"
        assert refusal in err, err
        return
    assert code == 0, err
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert docs
    for doc in docs:  # the judge: the API server, on exactly what --dry-run printed
        try:
            server_dry_run(apiserver, doc)
        except ApiException as e:
            raise AssertionError(f"--dry-run printed a {doc['kind']} the server refuses: "
                                 f"{e.body}") from None  # fmt: skip
    assert refusal is None, f"accepted by the server, but a rule refuses it: {refusal}"


def test_the_refusal_is_one_line_naming_both_flags(capsys):
    code = submit.main(["--dry-run", *_argv({"gpus": 0, "cpu": "5", "cpu_limit": "4"})])
    out, err = capsys.readouterr()
    assert code == contract.EXIT_BAD_INPUT and out == ""
    assert err.strip().splitlines() == [
        "error: invalid --cpu 5 with --cpu-limit 4: a cpu request must be at most its limit "
        "(the API server refuses the pod); raise the limit or lower the request"
    ]


def test_every_accelerator_has_its_gpu_counts():
    assert set(GKE_ACCELERATORS) <= set(GKE_GPU_COUNTS)
    assert all(counts and all(n >= 1 for n in counts) for counts in GKE_GPU_COUNTS.values())
