"""A real Kubernetes control plane on 127.0.0.1, built from the Kubernetes sources.

`build()` compiles cluster/controlplane (one pinned release of k8s.io/kubernetes and etcd)
into one multi-call binary, cached by release and source digest under the user's cache
directory, so only the first build on a machine is cold. `start()` generates the cluster's
credentials (a token per identity, the service-account signing key pair) and starts etcd,
kube-apiserver, kube-controller-manager and kube-scheduler as four processes, each in its
own process group, listening on free loopback ports only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "controlplane"
BINARY = "kube-cluster"
ADMIN = "admin"
CONTROLLER_MANAGER = "system:kube-controller-manager"
SCHEDULER = "system:kube-scheduler"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The Job controller's retry delay after a failed pod (10 s upstream); see main.go.
JOB_BACKOFF_ENV = "IMDB_CLUSTER_JOB_BACKOFF"
STATE_FILE = "state.json"


class ClusterError(Exception):
    """The cluster could not be built, started or reached; the message says what to do."""


def release(source: Path = SOURCE, module: str = "k8s.io/kubernetes") -> str:
    """The pinned release of `module`, as `source`'s go.mod requires it (one source of truth)."""
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)"
    m = re.search(pattern, (source / "go.mod").read_text(), re.M)
    if not m:
        raise ClusterError(f"{source / 'go.mod'} does not require {module}")
    return m.group(1)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imdb-train" / "cluster"


def binary_path(source: Path = SOURCE, name: str = BINARY, version: str = "") -> Path:
    """Where the binary of `source` lives: keyed by release and the sources' digest, so an
    edit of a .go file or go.sum builds anew and another checkout reuses it."""
    digest = hashlib.sha256()
    for path in sorted(source.glob("*.go")) + [source / "go.mod", source / "go.sum"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return cache_dir() / f"{name}-{version or release(source)}-{digest.hexdigest()[:12]}" / name


def ldflags(version: str) -> str:
    """-X stamps so that /version (and helm's kubeVersion check) see the real release."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def build(
    log=print,
    source: Path = SOURCE,
    name: str = BINARY,
    package: str = ".",
    version: str = "",
    flags: str | None = None,
) -> Path:
    """The binary of `package` in the Go module `source`, built if the cache has none of
    this source yet (cold: minutes; warm: a path)."""
    version = version or release(source)
    target = binary_path(source, name, version)
    if target.exists():
        return target
    if not shutil.which("go"):
        raise ClusterError(f"{name} is built from Go sources: install Go 1.26 or later")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    log(f"building {name} {version} from {source.relative_to(HERE.parent)} "
        "(cold: several minutes, cached after)")  # fmt: skip
    started = time.monotonic()
    ld = ldflags(version) if flags is None else flags
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", ld, "-o", str(partial), package],
        cwd=source, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ClusterError(f"go build in {source} failed:\n{proc.stderr.strip()[-4000:]}")
    partial.rename(target)
    log(f"built {name} in {time.monotonic() - started:.0f} s")
    return target


def free_ports(n: int) -> list[int]:
    """n distinct ports the kernel considers free right now (all held open together, so
    they differ). Every launch takes new ones: gRPC binds with SO_REUSEPORT, and a port a
    killed worker used may still be in TIME_WAIT."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_private(path: Path, text: str) -> None:
    """Credentials: created with mode 0600, never readable by others even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class Identity:
    """A user of the API server: the token file's row and a kubeconfig for it."""

    user: str
    groups: list[str]
    token: str = field(default_factory=lambda: secrets.token_hex(24))


@dataclass
class State:
    """Everything another command needs to find, use or stop a running cluster."""

    dir: str
    release: str
    binary: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    nodes: list[dict] = field(default_factory=list)
    extras: dict[str, int] = field(default_factory=dict)  # optional components' pids
    timings: dict[str, float] = field(default_factory=dict)  # seconds each start-up step took

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca(self) -> Path:
        return self.path / "pki" / "apiserver" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    def save(self) -> None:
        write_private(self.path / STATE_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> State | None:
        try:
            return cls(**json.loads((directory / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def all_pids(self) -> dict[str, int]:
        return {**self.pids, **self.extras}


def kubeconfig_text(server: str, ca: Path, user: str, token: str, namespace: str = "") -> str:
    context = {"cluster": "imdb-train-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "imdb-train-local",
                    "cluster": {"server": server, "certificate-authority": str(ca)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "imdb-train-local", "context": context}],
            "current-context": "imdb-train-local",
        },
        indent=1,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL what is left after `grace`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left (their parent, a finished `up`, is gone): nothing runs.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def spawn(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> int:
    """Start one component in its own session (so a terminal's ^C or a dying parent does
    not take it along, and `down` stops it with everything it started)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return proc.pid


def _https_get(url: str, ca: Path, token: str, timeout: float = 2.0) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_until(what: str, ready, timeout: float, pids: Iterable[int], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):
            if ready():
                return
        for pid in pids:
            if not alive(pid):
                raise ClusterError(f"{what}: a component exited; its log is in {logs}")
        time.sleep(0.2)
    raise ClusterError(f"{what} not ready after {timeout:.0f} s; logs in {logs}")


def _etcd_healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return json.loads(r.read()).get("health") == "true"


def self_signed(cert: Path, key: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 (made once; the key private), for the nodes'
    log servers and Kueue's webhooks."""
    if not cert.exists():
        cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        old = os.umask(0o077)
        try:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
        finally:
            os.umask(old)
    return cert, key


def node_user(node: str) -> str:
    """The Node authorizer's name for a node's kubelet."""
    return f"system:node:{node}"


def start(
    directory: Path, binary: Path, nodes: Iterable[str] = (), *, job_backoff: str = ""
) -> State:
    """Start the four control-plane processes; returns once the API server is ready and the
    controllers and scheduler run. Each node gets its own identity (system:node:NAME in
    system:nodes), so the Node authorizer and NodeRestriction hold its agent to its own
    Node and pods, as they hold a kubelet."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = directory / "logs"
    pki = directory / "pki"
    names = ["etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"]
    state = State(
        dir=str(directory),
        release=release(),
        binary=str(binary),
        ports=dict(zip(names, free_ports(len(names)), strict=True)),
    )
    identities = {
        ADMIN: Identity(ADMIN, ["system:masters"]),
        CONTROLLER_MANAGER: Identity(CONTROLLER_MANAGER, []),
        SCHEDULER: Identity(SCHEDULER, []),
    }
    for node in nodes:
        identities[node_user(node)] = Identity(node_user(node), ["system:nodes"])
    state.tokens = {name: i.token for name, i in identities.items()}
    _write_pki(pki, identities)
    state.save()

    mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        state.timings[step] = round(now - mark, 2)
        mark = now

    lap("credentials")
    p = state.ports
    etcd_url = f"http://127.0.0.1:{p['etcd']}"
    peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
    state.pids["etcd"] = spawn("etcd", [
        str(binary), "etcd", "--name", "local", "--data-dir", str(directory / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"local={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
    ], logs)  # fmt: skip
    state.save()
    wait_until("etcd", lambda: _etcd_healthy(p["etcd"]), 60, state.pids.values(), logs)
    lap("etcd")

    state.pids["apiserver"] = spawn("kube-apiserver", [
        str(binary), "kube-apiserver",
        "--etcd-servers", etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
        "--secure-port", str(p["apiserver"]),
        "--cert-dir", str(pki / "apiserver"),
        "--token-auth-file", str(pki / "tokens.csv"),
        "--authorization-mode", "Node,RBAC",
        # GKE's set beyond the defaults (which include ServiceAccount and PodSecurity):
        # nodes may change only themselves and their pods; pods asking for an extended
        # resource such as nvidia.com/gpu tolerate the taint GKE puts on those nodes.
        "--enable-admission-plugins", "NodeRestriction,ExtendedResourceToleration",
        "--service-account-key-file", str(pki / "sa.pub"),
        "--service-account-signing-key-file", str(pki / "sa.key"),
        "--service-account-issuer", ISSUER,
        "--service-cluster-ip-range", SERVICE_CIDR,
        "--endpoint-reconciler-type", "none",
        "--kubelet-preferred-address-types", "InternalIP",
        # Logs, exec and port-forward: the kubelets trust this client certificate only.
        "--kubelet-client-certificate", str(pki / "kubelet-client.crt"),
        "--kubelet-client-key", str(pki / "kubelet-client.key"),
        "--profiling=false",
    ], logs)  # fmt: skip
    state.save()
    admin = state.tokens[ADMIN]

    def api_ready() -> bool:
        return _https_get(f"{state.server}/readyz", state.ca, admin)[0] == 200

    wait_until("kube-apiserver", api_ready, 120, state.pids.values(), logs)
    lap("kube-apiserver")

    for ident in (CONTROLLER_MANAGER, SCHEDULER):
        short = ident.split(":")[-1]
        write_private(
            pki / f"{short}.kubeconfig",
            kubeconfig_text(state.server, state.ca, ident, state.tokens[ident]),
        )
    write_private(state.kubeconfig, kubeconfig_text(state.server, state.ca, ADMIN, admin))

    cm_kc = str(pki / "kube-controller-manager.kubeconfig")
    state.pids["controller-manager"] = spawn("kube-controller-manager", [
        str(binary), "kube-controller-manager",
        "--kubeconfig", cm_kc, "--authentication-kubeconfig", cm_kc,
        "--authorization-kubeconfig", cm_kc,
        "--bind-address", "127.0.0.1", "--secure-port", str(p["controller-manager"]),
        "--leader-elect=false", "--use-service-account-credentials",
        "--service-account-private-key-file", str(pki / "sa.key"),
        "--root-ca-file", str(state.ca),
        "--controllers", "*",
        "--cluster-name", "imdb-train-local",
    ], logs, env={JOB_BACKOFF_ENV: job_backoff} if job_backoff else None)  # fmt: skip
    sched_kc = str(pki / "kube-scheduler.kubeconfig")
    state.pids["scheduler"] = spawn("kube-scheduler", [
        str(binary), "kube-scheduler",
        "--kubeconfig", sched_kc, "--authentication-kubeconfig", sched_kc,
        "--authorization-kubeconfig", sched_kc,
        "--bind-address", "127.0.0.1", "--secure-port", str(p["scheduler"]),
        "--leader-elect=false",
    ], logs)  # fmt: skip
    state.save()

    def controllers_ready() -> bool:
        # The service-account controller made `default` in kube-system: the controller
        # manager is up and authorised.
        url = f"{state.server}/api/v1/namespaces/kube-system/serviceaccounts/default"
        return _https_get(url, state.ca, admin)[0] == 200

    wait_until("kube-controller-manager", controllers_ready, 120, state.pids.values(), logs)
    lap("controllers")
    state.save()
    return state


def _write_pki(pki: Path, identities: dict[str, Identity]) -> None:
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    (pki / "apiserver").mkdir(exist_ok=True, mode=0o700)
    key = pki / "sa.key"
    key.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(key)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pki / "sa.pub")],
            check=True, capture_output=True,
        )  # fmt: skip
    finally:
        os.umask(old)
    write_private(pki / "tokens.csv", token_rows(identities.values()))
    _kubelet_client(pki)


KUBELET_CLIENT_CA = "kubelet-client-ca.crt"


def _kubelet_client(pki: Path) -> None:
    """A CA the kubelets trust (their x509 clientCAFile) and the API server's client
    certificate signed by it, in system:masters."""
    old = os.umask(0o077)
    try:
        ca_key, ca = pki / "kubelet-client-ca.key", pki / KUBELET_CLIENT_CA
        key, csr, cert = (pki / f"kubelet-client.{ext}" for ext in ("key", "csr", "crt"))
        for path in (ca_key, ca, key, csr, cert):
            path.unlink(missing_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=imdb-train-kubelet-client-ca", "-keyout", str(ca_key),
             "-out", str(ca)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
             "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
             "-keyout", str(key), "-out", str(csr)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey",
             str(ca_key), "-CAcreateserial", "-days", "30", "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    finally:
        os.umask(old)


def token_rows(identities: Iterable[Identity]) -> str:
    """--token-auth-file rows: token,user,uid,"group1,group2"."""
    rows = []
    for i in identities:
        groups = f',"{",".join(i.groups)}"' if i.groups else ""
        rows.append(f"{i.token},{i.user},{i.user}{groups}")
    return "\n".join(rows) + "\n"


def processes(state: State) -> Iterator[tuple[str, int, bool]]:
    for name, pid in state.all_pids().items():
        yield name, pid, alive(pid)
