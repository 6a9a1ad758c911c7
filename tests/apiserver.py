"""The real control plane without nodes, for tests whose judge is the API server itself.

`apiserver` (a session fixture; import it into a test module) starts etcd, the API server,
the controller manager and the scheduler from cluster/controlplane.py (the binary is built
once and cached), installs JobSet's and Kueue's CRDs (no controllers: the server's own
validation is what these tests ask), and stops it all at the end. Node objects stand for node
pools: `add_node` creates one with the labels and capacity of a GKE node.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import addons
from cluster import controlplane as cp


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory) -> Iterator[cp.State]:
    """A running control plane with the JobSet and Kueue CRDs; KUBECONFIG points at it."""
    if not shutil.which("go"):  # the CRDs are read from the addons' Go modules
        pytest.skip("the real control plane needs Go (its binary and the addons' CRDs)")
    binary = cp.build(log=lambda line: None)
    directory: Path = tmp_path_factory.mktemp("apiserver")
    saved = os.environ.get("KUBECONFIG")
    state = None
    try:
        state = cp.start(directory, binary)
        install_crds(state, (addons.JOBSET, addons.KUEUE))
        os.environ["KUBECONFIG"] = str(state.kubeconfig)
        yield state
    finally:
        if state is not None:
            # Clients first, etcd last: an API server whose etcd is gone waits out its grace.
            for pid in reversed(list(state.all_pids().values())):
                cp.stop_group(pid)
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved


def install_crds(state: cp.State, which: tuple[addons.Addon, ...]) -> None:
    """The addons' CRDs from their Go modules, created and Established: no controller, no
    webhooks (the API server's own validation is what these tests ask)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client(state))
    names = []
    for addon in which:
        bases = addons.module_dir(addon) / "config" / "components" / "crd" / "bases"
        for path in sorted(bases.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
                    names.append(doc["metadata"]["name"])

    def established() -> bool:
        for name in names:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    until("the CRDs Established", established, 60)


def api_client(state: cp.State):
    from jobs.kube import load_api_client

    return load_api_client(str(state.kubeconfig))


def add_node(state: cp.State, name: str, labels: dict[str, str], capacity: dict[str, str]) -> None:
    """A Node object as a GKE node of a pool shows it: labels, capacity and allocatable."""
    from kubernetes import client

    core = client.CoreV1Api(api_client(state))
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    core.patch_node_status(name, {"status": {"capacity": capacity, "allocatable": capacity}})


def until(what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def without_property(schema: Any, name: str) -> Any:
    """A copy of an OpenAPI schema with every property `name` removed (an older API's)."""
    out = copy.deepcopy(schema)
    stack = [out]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            node.get("properties", {}).pop(name, None)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out
