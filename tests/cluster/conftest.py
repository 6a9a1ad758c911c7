"""The local cluster for the user-story tests: one real control plane per session.

Collected only where an image is named (`make cluster-test` builds the CPU image and names
it, as `make image-test` does): these tests need root, Go (the control plane's first build),
buildah and the image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster import local
from cluster.runtime import IMAGE_ENV
from tests.helpers import gcs_client, small_tarball

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
BUCKET = local.BUCKET
SMALL = "data/small.tar.gz"  # 300 reviews a class and split: an epoch in about a second
MEDIUM = "data/medium.tar.gz"  # 1,500 a class and split: LSTM epochs long enough to interrupt
RELEASE = "imdb-train"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    if collection_path.name.startswith("test_") and not os.environ.get(IMAGE_ENV):
        return True
    return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, shared_tarball):
    """A real control plane (cluster/), one CPU node and two one-GPU nodes, a storage
    emulator with the data; KUBECONFIG and STORAGE_EMULATOR_HOST set for the session.
    Stopped at the end, on failure too."""
    directory = tmp_path_factory.mktemp("cluster")
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "STORAGE_EMULATOR_HOST")}
    try:
        started = time.monotonic()
        state = local.up(directory, job_backoff="1s")
        print(f"cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        storage = local.storage_url(state)
        if state.ports.get("registry"):
            # Real nodes pull: the image goes to the cluster's registry, as a user pushes it.
            saved[IMAGE_ENV] = os.environ[IMAGE_ENV]
            os.environ[IMAGE_ENV] = push_image(state, os.environ[IMAGE_ENV])
        os.environ["KUBECONFIG"] = str(state.kubeconfig)
        os.environ["STORAGE_EMULATOR_HOST"] = storage
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        bucket = gcs_client(storage).bucket(BUCKET)  # `up` made it
        for key, per_class in ((SMALL, 300), (MEDIUM, 1500)):
            path = small_tarball(directory / Path(key).name, per_class, shared_tarball)
            bucket.blob(key).upload_from_filename(str(path), timeout=120)
        yield state
    finally:
        local.down(directory, quiet=True)
        for k, v in saved.items():  # IMAGE_ENV too, where it was renamed
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def push_image(state, image: str) -> str:
    """`make push` of `image` into the cluster's registry; its name there."""
    started = time.monotonic()
    name = local.push_image(state, image)
    print(f"pushed {name} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return name


MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def image_digest(image: str) -> str:
    """The digest a node pulls `image` by: the cluster registry's (`localhost:PORT/...`,
    which is not the local image's id), else the local image's."""
    host, _, rest = image.partition("/")
    if host.startswith("localhost:") and rest:
        import urllib.request

        repo, _, tag = rest.rpartition(":")
        req = urllib.request.Request(
            f"http://127.0.0.1:{host.split(':', 1)[1]}/v2/{repo}/manifests/{tag}",
            method="HEAD", headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.headers["Docker-Content-Digest"]
    return subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageDigest}}", image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def kubectl(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(TOOLS / "kubectl"), *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(TOOLS / "helm"), *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def cli(module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it: a process of its own, the environment's
    KUBECONFIG and STORAGE_EMULATOR_HOST."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMDB_TRAIN_GCS_DEADLINE": "30"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


@pytest.fixture
def namespace(cluster, request):
    """A namespace that enforces Pod Security `restricted`, with the chart installed (the
    trainer's ServiceAccount and the submitter's RBAC), as the docs set one up."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(kubectl("get", "all,events", "-n", name, check=False).stdout, file=sys.stderr)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def install_chart(namespace: str, *values: str) -> subprocess.CompletedProcess:
    return helm(
        "install", RELEASE, str(ROOT / "helm" / "imdb-train"), "-n", namespace,
        "--set", "image.repository=" + os.environ[IMAGE_ENV].rsplit(":", 1)[0],
        "--set", "image.tag=" + os.environ[IMAGE_ENV].rsplit(":", 1)[1],
        # The image here is the CPU one already (the helm test pod's default adds -cpu).
        "--set", "tests.image.tag=" + os.environ[IMAGE_ENV].rsplit(":", 1)[1],
        "--set", f"output=gs://{BUCKET}/{namespace}",
        "--set", f"data=gs://{BUCKET}/{SMALL}", "--set", f"accelerator={local.ACCELERATOR}",
        *values,
    )  # fmt: skip


def submit_args(namespace: str, *extra: str, data: str = SMALL, epochs: int = 1) -> list[str]:
    return [
        "--namespace", namespace, "--image", os.environ[IMAGE_ENV],
        "--output", f"gs://{BUCKET}/{namespace}", "--data", f"gs://{BUCKET}/{data}",
        "--epochs", str(epochs), "--cpu", "1", "--memory", "2Gi", "--memory-limit", "3Gi",
        *extra,
    ]  # fmt: skip
