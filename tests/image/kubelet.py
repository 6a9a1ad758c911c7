"""The image tests' harness: rendered Jobs started directly in the image, no control plane.

`render` asks `jobs.submit --dry-run` for the objects, `pod_of` makes the pod the Job
controller would, and `Kubelet.start` runs its container with the local cluster's runtime
(cluster/runtime.py), on the host's network.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.runtime import (
    IMAGE_ENV,
    INDEX_ANNOTATION,
    RESOLV_CONF,
    Container,
    Image,
    Sandbox,
    start_container,
)

__all__ = ["IMAGE_ENV", "Image", "Kubelet", "render", "the_job", "pod_of"]

ROOT = Path(__file__).resolve().parents[2]


def render(*argv: str) -> list[dict[str, Any]]:
    """The objects `python -m jobs.submit --dry-run ARGV` prints, as dicts."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.submit", "--dry-run", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"jobs.submit --dry-run {shlex.join(argv)} failed: {proc.stderr}")
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def the_job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [o for o in objects if o["kind"] == "Job"]
    return job


def pod_of(job: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
    """The pod the Job controller would create: the template plus its name and labels."""
    template = job["spec"]["template"]
    name = job["metadata"]["name"]
    labels = dict(template["metadata"].get("labels", {}))
    labels["batch.kubernetes.io/job-name"] = name
    labels["job-name"] = name
    annotations: dict[str, str] = {}
    pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
    hostname = pod_name
    if index is not None:
        labels[INDEX_ANNOTATION] = str(index)
        annotations[INDEX_ANNOTATION] = str(index)
        pod_name = f"{name}-{index}-{uuid.uuid4().hex[:5]}"
        hostname = f"{name}-{index}"  # Indexed Jobs set spec.hostname = <job>-<index>
    return {
        "metadata": {
            "name": pod_name,
            "namespace": job["metadata"].get("namespace", "default"),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {**template["spec"], "hostname": hostname},
    }


class Kubelet:
    """Starts containers of rendered pods in one image's root filesystem, on the host's
    network (every pod is 127.0.0.1)."""

    def __init__(self, image: Image, workdir: Path, hosts: Mapping[str, str] | None = None):
        assert image.rootfs is not None, "enter the Image first"
        self.image = image
        self.workdir = workdir
        # Extra /etc/hosts lines (name -> address): stands in for the cluster's DNS.
        self.hosts = dict(hosts or {})

    def start(
        self,
        job: Mapping[str, Any],
        *,
        index: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        env_override: Mapping[str, str] | None = None,
    ) -> Container:
        """Start the Job's first container as pod `index` would run it."""
        pod = pod_of(job, index)
        spec = pod["spec"]
        (container,) = spec["containers"]
        hostname = spec["hostname"]
        fqdn = f"{hostname}.{spec['subdomain']}" if spec.get("subdomain") else hostname
        hosts = ["127.0.0.1\tlocalhost", f"127.0.0.1\t{fqdn} {hostname}"]
        hosts += [f"{addr}\t{name}" for name, addr in self.hosts.items()]
        resolv = Path("/etc/resolv.conf")
        sandbox = Sandbox(
            hosts="\n".join(hosts) + "\n",
            resolv_conf=resolv.read_text() if resolv.exists() else RESOLV_CONF,
        )
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{pod['metadata']['name']}-", dir=self.workdir))
        return start_container(
            self.image, pod, container, pod_dir, sandbox,
            extra_env=extra_env, env_override=env_override,
        )  # fmt: skip
