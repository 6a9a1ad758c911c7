"""Controllers users install beside the control plane, built from their own sources: Kueue.

`start_kueue(state)` builds Kueue's manager (cluster/kueue/go.mod pins the release; the
binary is cached like the control plane's), installs the CRDs and the webhooks of that
same release (from the module's own `config/components`), and runs the manager on
127.0.0.1 with the cluster's admin credentials. Its webhooks are registered by URL with a
CA of ours, since the API server here reaches no Service: the apiserver calls Kueue's
mutating and validating webhooks for Jobs and Kueue's own objects as in a cluster.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path

import yaml

from cluster import controlplane as cp

KUEUE_SOURCE = cp.HERE / "kueue"
KUEUE_MODULE = "sigs.k8s.io/kueue"
KUEUE_NAMESPACE = "kueue-system"
METRICS_CERTS = "/etc/kueue/metrics/certs"  # fixed in Kueue's main.go
# Webhooks for what this project runs (Jobs) and Kueue's own objects; Kueue's webhooks for
# other frameworks (pods, deployments, Ray, ...) would intercept objects it does not manage.
_WEBHOOK_PATHS = ("-batch-v1-job", "-kueue-x-k8s-io-")


def kueue_release() -> str:
    return cp.release(KUEUE_SOURCE, KUEUE_MODULE)


def module_dir() -> Path:
    out = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", KUEUE_MODULE],
                         cwd=KUEUE_SOURCE, capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0 or not out.stdout.strip():
        subprocess.run(["go", "mod", "download", KUEUE_MODULE], cwd=KUEUE_SOURCE,
                       capture_output=True)  # fmt: skip
        out = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", KUEUE_MODULE],
                             cwd=KUEUE_SOURCE, capture_output=True, text=True)  # fmt: skip
    path = Path(out.stdout.strip())
    if not (path / "config" / "components").is_dir():
        raise cp.ClusterError(f"{KUEUE_MODULE} sources not found ({out.stderr.strip()})")
    return path


def build_kueue(log=print) -> Path:
    return cp.build(log, source=KUEUE_SOURCE, name="kueue-manager",
                    package=f"{KUEUE_MODULE}/cmd/kueue", version=kueue_release(),
                    flags="-s -w")  # fmt: skip


def _kubectl(state: cp.State, *args: str, stdin: str | None = None) -> str:
    from cluster.local import ROOT

    proc = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "kubectl"), "--kubeconfig", str(state.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise cp.ClusterError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def webhooks(source: Path, port: int, ca: bytes) -> list[dict]:
    """Kueue's webhook configurations for Jobs and its own objects, by URL on loopback."""
    docs = [d for d in yaml.safe_load_all((source / "manifests.yaml").read_text()) if d]
    bundle = base64.b64encode(ca).decode()
    out = []
    for doc in docs:
        kept = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(p in path for p in _WEBHOOK_PATHS):
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                        "caBundle": bundle}  # fmt: skip
                kept.append(hook)
        doc["metadata"]["name"] = f"kueue-{doc['metadata']['name']}"
        doc["webhooks"] = kept
        out.append(doc)
    return out


def start_kueue(state: cp.State, log=print) -> int:
    """Kueue's manager running against the cluster; returns its pid (kept in the state)."""
    if "kueue" in state.extras and cp.alive(state.extras["kueue"]):
        return state.extras["kueue"]
    binary = build_kueue(log)
    src = module_dir() / "config" / "components"
    _kubectl(state, "apply", "--server-side", "-f", str(src / "crd" / "bases"))
    _kubectl(state, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    created = subprocess.run(  # idempotent create
        [str(Path(__file__).resolve().parents[1] / ".tools" / "bin" / "kubectl"),
         "--kubeconfig", str(state.kubeconfig), "create", "namespace", KUEUE_NAMESPACE],
        capture_output=True, text=True,
    )  # fmt: skip
    if created.returncode != 0 and "AlreadyExists" not in created.stderr:
        raise cp.ClusterError(f"namespace {KUEUE_NAMESPACE}: {created.stderr.strip()}")
    directory = state.path / "kueue"
    cert, _key = cp.self_signed(directory / "certs" / "tls.crt", directory / "certs" / "tls.key")
    webhook_port, health_port, visibility_port = cp.free_ports(3)
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert.parent)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
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
    state.save()

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2) as r:
            return r.status == 200

    cp.wait_until("Kueue", healthy, 120, [pid], state.path / "logs")
    hooks = webhooks(src / "webhook", webhook_port, cert.read_bytes())
    _kubectl(state, "apply", "--server-side", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": hooks}))  # fmt: skip
    log(f"Kueue {kueue_release()} running (webhooks on 127.0.0.1:{webhook_port})")
    return pid
