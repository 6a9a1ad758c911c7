"""Controllers users install beside the control plane, built from their own sources: Kueue
and JobSet.

`start_kueue(state)` and `start_jobset(state)` build each manager (cluster/kueue and
cluster/jobset pin the releases in their go.mod; binaries are cached like the control
plane's), install the CRDs and webhooks of that same release (from the module's own
`config/components`), and run the manager on 127.0.0.1 with the cluster's admin
credentials. Webhooks are registered by URL with a CA of ours, since the API server here
reaches no Service: the apiserver calls each controller's mutating and validating webhooks
as in a cluster.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import urllib.request
from pathlib import Path

import yaml

from cluster import controlplane as cp


@dataclasses.dataclass(frozen=True)
class Addon:
    name: str  # binary and process name
    source: Path  # our Go module that pins the release
    module: str  # the upstream module
    package: str  # its main package
    namespace: str
    webhook_paths: tuple[str, ...]  # the webhooks registered (paths containing one of these)


KUEUE = Addon(
    name="kueue-manager", source=cp.HERE / "kueue", module="sigs.k8s.io/kueue",
    package="sigs.k8s.io/kueue/cmd/kueue", namespace="kueue-system",
    # Webhooks for what this project runs (Jobs, JobSets) and Kueue's own objects; Kueue's
    # webhooks for other frameworks (pods, deployments, Ray, ...) would intercept objects
    # it does not manage.
    webhook_paths=("-batch-v1-job", "-kueue-x-k8s-io-", "-jobset-x-k8s-io-"),
)  # fmt: skip
JOBSET = Addon(
    name="jobset-manager", source=cp.HERE / "jobset", module="sigs.k8s.io/jobset",
    package="sigs.k8s.io/jobset", namespace="jobset-system",
    webhook_paths=("-jobset-x-k8s-io-", "--v1-pod"),
)  # fmt: skip
METRICS_CERTS = "/etc/kueue/metrics/certs"  # fixed in Kueue's main.go


def addon_release(addon: Addon) -> str:
    return cp.release(addon.source, addon.module)


def module_dir(addon: Addon = KUEUE) -> Path:
    def where() -> subprocess.CompletedProcess:
        return subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", addon.module],
                              cwd=addon.source, capture_output=True, text=True)  # fmt: skip

    out = where()
    if out.returncode != 0 or not out.stdout.strip():
        subprocess.run(["go", "mod", "download", addon.module], cwd=addon.source,
                       capture_output=True)  # fmt: skip
        out = where()
    path = Path(out.stdout.strip())
    if not (path / "config" / "components").is_dir():
        raise cp.ClusterError(f"{addon.module} sources not found ({out.stderr.strip()})")
    return path


def build_addon(addon: Addon, log=print) -> Path:
    return cp.build(log, source=addon.source, name=addon.name, package=addon.package,
                    version=addon_release(addon), flags="-s -w")  # fmt: skip


def _kubectl(state: cp.State, *args: str, stdin: str | None = None, ok: str = "") -> str:
    from cluster.local import ROOT

    proc = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "kubectl"), "--kubeconfig", str(state.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0 and not (ok and ok in proc.stderr):
        raise cp.ClusterError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def webhooks(
    addon: Addon, source: Path, port: int, ca: bytes, skip: tuple[str, ...] = ()
) -> list[dict]:
    """The addon's webhook configurations that we keep, by URL on loopback."""
    docs = [d for d in yaml.safe_load_all((source / "manifests.yaml").read_text()) if d]
    bundle = base64.b64encode(ca).decode()
    out = []
    for doc in docs:
        kept = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(p in path for p in addon.webhook_paths) and not any(p in path for p in skip):
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": bundle}  # fmt: skip
                if path.endswith("--v1-pod") and addon is JOBSET:
                    # As JobSet's own kustomize patch: only the pods of JobSets.
                    exists = {"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}
                    hook["objectSelector"] = {"matchExpressions": [exists]}
                kept.append(hook)
        doc["metadata"]["name"] = f"{addon.name.split('-')[0]}-{doc['metadata']['name']}"
        doc["webhooks"] = kept
        out.append(doc)
    return out


def _install_crds(state: cp.State, addon: Addon) -> Path:
    """CRDs applied and Established, the namespace made; returns config/components."""
    src = module_dir(addon) / "config" / "components"
    _kubectl(state, "apply", "--server-side", "-f", str(src / "crd" / "bases"))
    # A CRD just applied may have no status yet, which `kubectl wait` reports as an error.
    cp.wait_until(f"{addon.module} CRDs", lambda: _established(state), 60, [], state.path / "logs")
    _kubectl(state, "create", "namespace", addon.namespace, ok="AlreadyExists")
    return src


def _established(state: cp.State) -> bool:
    try:
        _kubectl(state, "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s")
    except cp.ClusterError:
        return False
    return True


def _register_webhooks(
    state: cp.State, addon: Addon, src: Path, port: int, ca: bytes, skip: tuple[str, ...] = ()
) -> None:
    hooks = webhooks(addon, src / "webhook", port, ca, skip)
    _kubectl(state, "apply", "--server-side", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": hooks}))  # fmt: skip


def _healthy(port: int):
    def check() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200

    return check


def jobset_installed(state: cp.State) -> bool:
    return "jobset" in state.extras and cp.alive(state.extras["jobset"])


def start_jobset(state: cp.State, log=print) -> int:
    """JobSet's controller manager running against the cluster; returns its pid."""
    if jobset_installed(state):
        return state.extras["jobset"]
    binary = build_addon(JOBSET, log)
    src = _install_crds(state, JOBSET)
    directory = state.path / "jobset"
    cert, _key = cp.self_signed(directory / "certs" / "tls.crt", directory / "certs" / "tls.key")
    webhook_port, health_port = cp.free_ports(2)
    config = {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert.parent)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    pid = cp.spawn("jobset", [str(binary), f"--config={directory / 'config.yaml'}",
                              "--zap-log-level=info"],
                   state.path / "logs", env={"KUBECONFIG": str(state.kubeconfig)})  # fmt: skip
    state.extras["jobset"] = pid
    state.save()
    cp.wait_until("JobSet", _healthy(health_port), 120, [pid], state.path / "logs")
    _register_webhooks(state, JOBSET, src, webhook_port, cert.read_bytes())
    log(f"JobSet {addon_release(JOBSET)} running (webhooks on 127.0.0.1:{webhook_port})")
    return pid


def start_kueue(state: cp.State, log=print) -> int:
    """Kueue's manager running against the cluster; returns its pid (kept in the state)."""
    with_jobset = jobset_installed(state)
    if "kueue" in state.extras and cp.alive(state.extras["kueue"]):
        if (state.path / "kueue" / "with-jobset").exists() == with_jobset:
            return state.extras["kueue"]
        # JobSet came after Kueue: Kueue reads its frameworks at start, so start it again.
        cp.stop_group(state.extras.pop("kueue"))
    binary = build_addon(KUEUE, log)
    src = _install_crds(state, KUEUE)
    directory = state.path / "kueue"
    cert, _key = cp.self_signed(directory / "certs" / "tls.crt", directory / "certs" / "tls.key")
    webhook_port, health_port, visibility_port = cp.free_ports(3)
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE.namespace,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert.parent)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        # JobSets too when its controller runs (Kueue needs JobSet's CRD for that framework).
        "integrations": {
            "frameworks": ["batch/job"] + (["jobset.x-k8s.io/jobset"] if with_jobset else [])
        },  # fmt: skip
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    # Without its internal certificate management (which serves a Service's DNS name) the
    # manager reads its metrics certificate from a fixed path: ours is bind-mounted there in
    # a mount namespace of its own, leaving only an empty mount point on the host.
    Path(METRICS_CERTS).mkdir(parents=True, exist_ok=True)
    pid = cp.spawn("kueue", [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f'mount --bind "$1" {METRICS_CERTS} && shift && exec "$@"', "kueue",
        str(cert.parent), str(binary), f"--config={directory / 'config.yaml'}",
        "--zap-log-level=info", f"--visibility-server-port={visibility_port}",
        # The on-demand visibility API server wants its own certificates at /visibility.
        "--feature-gates=VisibilityOnDemand=false",
    ], state.path / "logs", env={"KUBECONFIG": str(state.kubeconfig)})  # fmt: skip
    state.extras["kueue"] = pid
    (directory / "with-jobset").unlink(missing_ok=True)
    if with_jobset:
        (directory / "with-jobset").touch()
    state.save()

    cp.wait_until("Kueue", _healthy(health_port), 120, [pid], state.path / "logs")
    _register_webhooks(state, KUEUE, src, webhook_port, cert.read_bytes(),
                       skip=() if with_jobset else ("-jobset-x-k8s-io-",))  # fmt: skip
    log(f"Kueue {addon_release(KUEUE)} running (webhooks on 127.0.0.1:{webhook_port})")
    return pid
