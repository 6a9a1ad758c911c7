"""The local cluster's admission policies (cluster/kubelet.py), judged by the real API server.

Its GPU nodes are capacity only and pods run the CPU image: a container that asks for
`nvidia.com/gpu` is told IMDB_TRAIN_GPUS=0 (the stand-in for a GPU), any other is left as the
Job made it; every pod gets STORAGE_EMULATOR_HOST (the stand-in for Workload Identity).
"""

from __future__ import annotations

import uuid

import pytest

from cluster import kubelet, local
from tests.apiserver import api_client, until
from trainer import contract

STORAGE = "http://192.0.2.1:4443"


@pytest.fixture(scope="module")
def policed(apiserver):
    local._apply(apiserver, kubelet.storage_policy(STORAGE) + kubelet.gpu_policy())
    return apiserver


def container(name: str, gpus: int | None, env: dict[str, str]) -> dict:
    limits = {"cpu": "1", "memory": "1Gi"}
    if gpus is not None:
        limits[kubelet.GPU_RESOURCE] = str(gpus)
    return {
        "name": name,
        "image": "localhost:5000/imdb-train:0.1.0-cpu",
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": {"limits": limits},
    }


def admitted(state, *containers: dict) -> dict[str, dict[str, str]]:
    """The env of each container of a pod as admission leaves it (a server-side dry run:
    nothing is stored), once the policies are in force."""
    from kubernetes import client

    core = client.CoreV1Api(api_client(state))
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
            "spec": {"restartPolicy": "Never", "containers": list(containers)}}  # fmt: skip
    found: dict[str, dict[str, str]] = {}

    def mutated() -> bool:
        try:
            pod = core.create_namespaced_pod("default", body, dry_run="All")
        except client.ApiException as e:  # the namespace's ServiceAccount not made yet
            if e.status != 403:
                raise
            return False
        found.clear()
        for c in pod.spec.containers:
            found[c.name] = {e.name: e.value for e in c.env or []}
        return all("STORAGE_EMULATOR_HOST" in env for env in found.values())

    until("the policies in force", mutated, 30)
    return found


def test_a_container_asking_for_a_gpu_is_told_it_asked_for_none(policed):
    env = admitted(
        policed,
        container("trainer", 1, {contract.GPUS_ENV: "1", "KEEP": "me"}),
        container("cpu-side", None, {"OTHER": "x"}),
    )
    assert env["trainer"] == {contract.GPUS_ENV: "0", "KEEP": "me",
                              "STORAGE_EMULATOR_HOST": STORAGE}  # fmt: skip
    # A container without a GPU limit is left as it was made (plus the storage stand-in).
    assert env["cpu-side"] == {"OTHER": "x", "STORAGE_EMULATOR_HOST": STORAGE}


def test_a_pod_that_asks_for_no_gpu_is_left_alone(policed):
    env = admitted(policed, container("trainer", None, {contract.GPUS_ENV: "2"}))
    assert env["trainer"][contract.GPUS_ENV] == "2"
