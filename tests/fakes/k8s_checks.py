"""Test helpers: find helm, validate objects against the Kubernetes schema and Pod Security."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "imdb-train"
K8S_VERSION = "1.33"  # the version the fake API server reports and validates against
# The chart's kubeVersion floor (Chart.yaml) and the newest schema kubernetes-validate ships.
MIN_K8S_VERSION = "1.31"

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted)
_ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret", "name",
}  # fmt: skip


def helm_binary() -> str:
    """Path of helm: $HELM, .tools/bin/helm (scripts/install-helm.sh), or PATH.

    Skips the test when helm is missing, except under CI where that is a failure.
    """
    for candidate in (
        os.environ.get("HELM"),
        str(ROOT / ".tools" / "bin" / "helm"),
        shutil.which("helm"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = "helm not found: run scripts/install-helm.sh (or set HELM)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=check, timeout=60
    )


def helm_template(*set_args: str, release: str = "imdb-train") -> list[dict[str, Any]]:
    args = [a for s in set_args for a in ("--set", s)]
    out = helm("template", release, str(CHART), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


NEWEST_K8S_VERSION = kubernetes_validate.utils.latest_version()


def validate(obj: dict[str, Any], version: str = K8S_VERSION) -> None:
    """Raise kubernetes_validate.ValidationError unless `obj` matches the strict schema."""
    kubernetes_validate.validate(obj, version, strict=True)


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "Job":
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def restricted_violations(obj: dict[str, Any]) -> list[str]:
    """Pod Security Standards "restricted" violations (plus our read-only root rule)."""
    spec = pod_spec_of(obj)
    if spec is None:
        return []
    bad = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(f"{flag} is true")
    psc = spec.get("securityContext") or {}
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - _ALLOWED_VOLUMES
        if kinds:
            bad.append(f"volume {volume['name']} uses {sorted(kinds)}")
    for sysctl in psc.get("sysctls") or []:
        bad.append(f"sysctl {sysctl['name']}")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    for c in containers:
        csc = c.get("securityContext") or {}
        name = c["name"]
        if csc.get("privileged"):
            bad.append(f"{name}: privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot is not true")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser is 0")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile is {seccomp}")
        if csc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount {csc['procMount']}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"{name}: hostPort")
        if csc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: root filesystem is writable")
    return bad
