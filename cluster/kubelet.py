"""Real nodes for the local cluster: containerd and a kubelet per node, CNI, CoreDNS, a registry.

Every node is a kubelet built from the same pinned Kubernetes module as the control plane
(the multi-call binary's `kubelet`) and a containerd of its own (own root, state, socket and
cgroup root), so pods run as they run on GKE: images pulled from a registry, cgroup limits
(OOMKilled 137 at the memory limit), RuntimeDefault seccomp, `kubectl exec`, the kubelet's
graceful termination and node-pressure eviction. Pod networking is the reference CNI plugins
(a `bridge` + `host-local` network per node with its own /24, `portmap`); cluster DNS is
CoreDNS (built with `go install`, cached), answering on the nodes' address for Services and
headless pod names. The registry is Debian's `docker-registry` on 127.0.0.1, so
`make push IMAGE=localhost:PORT/imdb-train:TAG` is the step a user takes with GKE's registry.

All nodes share one host address, NODE_IP (TEST-NET-1, on a link of its own), and differ
by kubelet port: the kubelet cannot use loopback, and pods cannot reach the host's 127.0.0.1.
Host services pods use (the storage emulator, CoreDNS) listen on NODE_IP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cluster import controlplane as cp
from trainer import contract

NODE_IP = "192.0.2.1"  # TEST-NET-1: never routed, private to this host
HOST_LINK = "imdbtr-host"
POD_NET = "10.214"  # node i gets POD_NET.(i+1).0/24
BRIDGE_PREFIX = "imdbk"  # the bridge of node i: imdbk<i>
CNI_BIN = Path("/usr/lib/cni")
CGROUP_ROOT_PREFIX = "imdbtr-"  # node NAME's pods live under /imdbtr-NAME in every hierarchy
CGROUP_FS = Path("/sys/fs/cgroup")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # containerd's sandbox_image names it
COREDNS_VERSION = "v1.15.0"
CLUSTER_DOMAIN = "cluster.local"
IPTABLES_PREFIXES = ("KUBE-", "CNI-")
# A unix socket's path is at most 107 bytes, which a node directory under a deep state
# directory (a test's tmp path) exceeds: the nodes' containerd sockets live here instead.
SOCKET_ROOT = Path("/run/imdbtr")


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, **kw)


# --- cached builds ---------------------------------------------------------------------------
def pause_archive(log: Callable[[str], None] = print) -> Path:
    """The pause image as an OCI archive, built once from the pinned release's pause.c
    (`gcc -static`, packed from scratch with buildah): no registry is needed for it."""
    version = cp.release()
    target = cp.cache_dir() / f"pause-{version}.tar"
    if target.exists():
        return target
    gomodcache = run("go", "env", "GOMODCACHE").stdout.strip()
    source = Path(gomodcache) / f"k8s.io/kubernetes@{version}/build/pause/linux/pause.c"
    if not source.exists():
        run("go", "mod", "download", f"k8s.io/kubernetes@{version}", cwd=cp.SOURCE)
    log(f"building the pause image from {source.name} ({version})")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        run("gcc", "-Os", "-static", "-o", str(binary), str(source),
            f"-DVERSION={version}")  # fmt: skip
        ctr = run("buildah", "from", "scratch").stdout.strip()
        try:
            run("buildah", "copy", ctr, str(binary), "/pause")
            run("buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
            partial = target.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            image = run("buildah", "commit", "--rm", ctr).stdout.strip().splitlines()[-1]
            ctr = ""
            run("buildah", "push", image, f"oci-archive:{partial}:{PAUSE_IMAGE}")
            run("buildah", "rmi", image, check=False)
            partial.rename(target)
        finally:
            if ctr:
                run("buildah", "rm", ctr, check=False)
    return target


def coredns_binary(log: Callable[[str], None] = print) -> Path:
    """CoreDNS from the Go module proxy (`go install`, cold about 4 minutes), cached."""
    directory = cp.cache_dir() / f"coredns-{COREDNS_VERSION}"
    target = directory / "coredns"
    if target.exists():
        return target
    log(f"building CoreDNS {COREDNS_VERSION} (cold: several minutes, cached after)")
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", "-s -w",
         f"github.com/coredns/coredns@{COREDNS_VERSION}"],
        env={**os.environ, "GOBIN": str(directory)}, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise cp.ClusterError(f"go install coredns failed:\n{proc.stderr.strip()[-3000:]}")
    return target


# --- host set-up -----------------------------------------------------------------------------
def setup_host() -> None:
    """NODE_IP on a dummy link, forwarding on (pods of different nodes reach each other
    through the host)."""
    # A bridge without ports: this kernel has no dummy links.
    made = run("ip", "link", "add", HOST_LINK, "type", "bridge", check=False)
    if made.returncode != 0 and "File exists" not in made.stderr:
        raise cp.ClusterError(f"cannot add the nodes' link {HOST_LINK}: {made.stderr.strip()}")
    run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", HOST_LINK)
    run("ip", "link", "set", HOST_LINK, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _v1_hierarchies() -> list[Path]:
    if not CGROUP_FS.exists():
        return []
    return [
        p for p in CGROUP_FS.iterdir()
        if p.is_dir() and p.name != "unified" and not p.is_symlink()
    ]  # fmt: skip


def node_cgroups(name: str) -> str:
    """The kubelet's cgroupRoot for node `name`, made beforehand in every hierarchy (the
    kubelet creates only its QoS levels under it); cpuset needs its cpus and mems copied."""
    root = f"/{CGROUP_ROOT_PREFIX}{name}"
    for hierarchy in _v1_hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                (path / f).write_text((hierarchy / f).read_text())
    unified = CGROUP_FS / "unified"
    if unified.is_dir():
        (unified / root.lstrip("/")).mkdir(exist_ok=True)
    return root


def remove_cgroups(name: str) -> None:
    """Depth first: a cgroup directory is removed with rmdir once it has no children."""
    root = f"{CGROUP_ROOT_PREFIX}{name}"
    for hierarchy in [*_v1_hierarchies(), CGROUP_FS / "unified"]:
        top = hierarchy / root
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


# --- one node --------------------------------------------------------------------------------
# The longest socket path the kubelet makes under its --root-dir.
KUBELET_LONGEST_SOCKET = "kubelet/device-plugins/kubelet.sock"


def check_socket_paths(directory: Path, nodes: list[str]) -> None:
    """Refuse a state directory so deep that a kubelet's sockets under it would exceed a
    unix socket's 107 bytes (the kubelet would exit at start)."""
    for name in nodes:
        path = os.path.abspath(directory / "nodes" / name / KUBELET_LONGEST_SOCKET)
        if len(path.encode()) > 107:
            raise cp.ClusterError(
                f"cluster directory {directory} is too deep: the kubelet's socket {path} "
                f"would be {len(path.encode())} bytes, a unix socket's path is at most 107; "
                "set IMDB_CLUSTER_DIR to a shorter path"
            )


def containerd_socket(node_dir: Path) -> Path:
    """The node's containerd socket (its ttrpc one beside it), named by the node directory."""
    digest = hashlib.sha256(os.path.abspath(node_dir).encode()).hexdigest()[:16]
    return SOCKET_ROOT / digest / "containerd.sock"


def containerd_config(node_dir: Path, registry_port: int) -> Path:
    c = node_dir / "containerd"
    containerd_socket(node_dir).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    certs = c / "certs.d"
    host = f"localhost:{registry_port}"
    (certs / host).mkdir(parents=True, exist_ok=True)
    (certs / host / "hosts.toml").write_text(
        f'server = "http://127.0.0.1:{registry_port}"\n\n'
        f'[host."http://127.0.0.1:{registry_port}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{containerd_socket(node_dir)}"
[ttrpc]
  address = "{containerd_socket(node_dir)}.ttrpc"
[debug]
  level = "warn"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  systemd_cgroup = false
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: without it a Guaranteed pod's sandbox cannot start.
  restrict_oom_score_adj = true
  # `ip netns` bind mounts over /run/netns would hide containerd's own.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{node_dir / "cni"}"
[{cri}.registry]
  config_path = "{certs}"
"""
    path = c / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cni_config(node_dir: Path, index: int) -> None:
    net = f"{POD_NET}.{index + 1}"
    conf = {
        "cniVersion": "1.0.0",
        "name": f"imdbk{index}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": f"{BRIDGE_PREFIX}{index}",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": f"{net}.0/24", "gateway": f"{net}.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node_dir / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    d = node_dir / "cni"
    d.mkdir(parents=True, exist_ok=True)
    (d / "10-imdbk.conflist").write_text(json.dumps(conf, indent=1))


def kubelet_config(node_dir: Path, node, port: int, healthz: int, client_ca: Path) -> Path:
    taints = []
    if node.gpus:
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node_cgroups(node.name),
        "failSwapOn": False,
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        # Only the API server holds a certificate of that CA.
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        "resolvConf": "/etc/resolv.conf",
        "containerRuntimeEndpoint": f"unix://{containerd_socket(node_dir)}",
        "podLogsDir": str(node_dir / "pod-logs"),
        # A pull that also produced a preloaded image must not be refused.
        "imagePullCredentialsVerificationPolicy": "NeverVerify",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The machine's disk is shared by every node: only a real shortage evicts.
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "registerWithTaints": taints,
        "shutdownGracePeriod": "0s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
    }
    path = node_dir / "kubelet.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def node_labels(node, zone: str = "us-central1-a") -> dict[str, str]:
    """GKE's labels (the kubelet may set these under NodeRestriction)."""
    labels = {
        "cloud.google.com/gke-nodepool": node.pool,
        "node.kubernetes.io/instance-type": "n1-standard-8" if not node.gpus else "g2-standard-8",
        "topology.kubernetes.io/zone": zone,
    }
    if node.gpus:
        labels["cloud.google.com/gke-accelerator"] = node.accelerator
        labels["cloud.google.com/gke-gpu"] = "true"
    return labels


def import_image(socket: Path, archive: Path) -> None:
    run("ctr", "--address", str(socket), "-n", "k8s.io", "images", "import",
        "--all-platforms", str(archive))  # fmt: skip


def wait_socket(socket: Path, name: str, pid: int, logs: Path, timeout: float = 60) -> None:
    def ready() -> bool:
        return run("ctr", "--address", str(socket), "version", check=False).returncode == 0

    cp.wait_until(f"containerd ({name})", ready, timeout, [pid], logs)


def kill_tasks(socket: Path) -> None:
    """SIGKILL every container and sandbox a node's containerd runs (what a VM that is gone
    does to them), until none runs; containerd records their exits as usual."""
    if not socket.exists():
        return
    base = ["ctr", "--address", str(socket), "-n", "k8s.io"]
    tasks = run(*base, "tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        run(*base, "tasks", "kill", "-s", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    while tasks and time.monotonic() < deadline:
        listing = run(*base, "tasks", "ls", check=False).stdout
        if "RUNNING" not in listing:
            break
        time.sleep(0.2)


def stop_containers(socket: Path) -> None:
    """The pods' containers and sandboxes a node's containerd runs (a kubelet that is gone
    leaves them): killed, then removed with their tasks and snapshots."""
    if not socket.exists():
        return
    base = ["ctr", "--address", str(socket), "-n", "k8s.io"]
    kill_tasks(socket)
    for task in run(*base, "tasks", "ls", "-q", check=False).stdout.split():
        run(*base, "tasks", "delete", "-f", task, check=False)
    for c in run(*base, "containers", "ls", "-q", check=False).stdout.split():
        run(*base, "containers", "delete", c, check=False)


def unmount_under(directory: Path) -> None:
    """Mounts under `directory` (overlay snapshots, netns bind mounts, the kubelet's
    projected volumes), deepest first."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].encode().decode("unicode_escape")
            if target == str(directory) or target.startswith(f"{directory}/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        run("umount", "-l", target, check=False)


def remove_networking(count: int) -> None:
    for i in range(count):
        run("ip", "link", "del", f"{BRIDGE_PREFIX}{i}", check=False)
    run("ip", "link", "del", HOST_LINK, check=False)


def remove_iptables() -> None:
    """The chains the kubelet and the CNI plugins add: nothing of theirs removes them."""
    for table in ("filter", "nat", "mangle"):
        rules = run("iptables-save", "-t", table, check=False).stdout.splitlines()
        for rule in rules:
            if rule.startswith("-A ") and any(p in rule for p in IPTABLES_PREFIXES):
                run("iptables", "-t", table, "-D", *rule[3:].split(), check=False)
        for rule in rules:
            if rule.startswith(":") and rule[1:].startswith(IPTABLES_PREFIXES):
                chain = rule[1:].split()[0]
                run("iptables", "-t", table, "-F", chain, check=False)
        for rule in rules:
            if rule.startswith(":") and rule[1:].startswith(IPTABLES_PREFIXES):
                chain = rule[1:].split()[0]
                run("iptables", "-t", table, "-X", chain, check=False)


def require_tools() -> None:
    for tool in ("containerd", "runc", "ctr", "docker-registry", "iptables", "buildah", "gcc"):
        if not shutil.which(tool):
            raise cp.ClusterError(f"{tool} not found: `make host-tools` installs it (apt-get)")
    if not (CNI_BIN / "bridge").exists():
        raise cp.ClusterError(f"no CNI plugins in {CNI_BIN}: apt-get install "
                              "containernetworking-plugins")  # fmt: skip


# --- cluster-wide components -------------------------------------------------------------
def registry_dir() -> Path:
    """The registry's blobs outlive a cluster (a second push of the same image uploads
    nothing), as a project's registry does."""
    return cp.cache_dir() / "registry"


def start_registry(state: cp.State, port: int) -> int:
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    config = state.path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    pid = cp.spawn("registry", ["docker-registry", "serve", str(config)], state.path / "logs")
    import urllib.request

    cp.wait_until("the registry",
                  lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/",
                                                 timeout=2).status == 200,
                  30, [pid], state.path / "logs")  # fmt: skip
    return pid


def start_coredns(state: cp.State, binary: Path) -> int:
    """Cluster DNS on NODE_IP:53 (the kubelets' clusterDNS), reading Services and
    EndpointSlices with the admin credentials; other names go to the host's resolver."""
    corefile = state.path / "Corefile"
    corefile.write_text(
        f".:53 {{\n  bind {NODE_IP}\n  errors\n"
        f"  kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"    kubeconfig {state.kubeconfig}\n    pods insecure\n"
        "    fallthrough in-addr.arpa ip6.arpa\n    ttl 5\n  }\n"
        "  forward . /etc/resolv.conf\n  cache 5\n  loop\n}\n"
    )
    pid = cp.spawn("coredns", [str(binary), "-conf", str(corefile)], state.path / "logs")

    def answers() -> bool:
        import socket

        # A DNS query for kubernetes.default.svc.cluster.local (type A).
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        for part in f"kubernetes.default.svc.{CLUSTER_DOMAIN}".split("."):
            q += bytes([len(part)]) + part.encode()
        q += b"\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            s.sendto(q, (NODE_IP, 53))
            reply = s.recv(512)
        return reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 0  # NOERROR: it knows the API

    cp.wait_until("CoreDNS", answers, 60, [pid], state.path / "logs")
    return pid


def start_containerd(state: cp.State, name: str, registry_port: int, pause: Path) -> int:
    node_dir = state.path / "nodes" / name
    config = containerd_config(node_dir, registry_port)
    logs = state.path / "logs"
    pid = cp.spawn(f"containerd-{name}", ["containerd", "--config", str(config)], logs)
    socket = containerd_socket(node_dir)
    wait_socket(socket, name, pid, logs)
    import_image(socket, pause)
    return pid


def start_kubelet(state: cp.State, node, index: int, port: int, healthz: int) -> int:
    node_dir = state.path / "nodes" / node.name
    cni_config(node_dir, index)
    client_ca = state.path / "pki" / cp.KUBELET_CLIENT_CA
    config = kubelet_config(node_dir, node, port, healthz, client_ca)
    user = cp.node_user(node.name)
    kubeconfig = node_dir / "kubeconfig"
    cp.write_private(kubeconfig, cp.kubeconfig_text(state.server, state.ca, user,
                                                    state.tokens[user]))  # fmt: skip
    labels = ",".join(f"{k}={v}" for k, v in node_labels(node).items())
    return cp.spawn(f"kubelet-{node.name}", [
        state.binary, "kubelet", "--config", str(config), "--kubeconfig", str(kubeconfig),
        "--root-dir", str(node_dir / "kubelet"), "--cert-dir", str(node_dir / "pki"),
        "--hostname-override", node.name, "--node-ip", NODE_IP, "--node-labels", labels,
        "--v", "1",
    ], state.path / "logs")  # fmt: skip


def gpu_capacity_patch(node) -> dict:
    """GPUs are capacity only (the containers run on the CPU): patched into the Node's
    status as a device plugin would report them; the kubelet keeps extended resources."""
    gpus = str(node.gpus)
    return {"status": {"capacity": {"nvidia.com/gpu": gpus}}}


def mutating_policy(
    name: str, expression: str, conditions: dict[str, str] | None = None
) -> list[dict]:
    """A MutatingAdmissionPolicy on pod creation (an ApplyConfiguration `expression`, only
    where every CEL expression of `conditions` holds) and its binding."""
    spec: dict = {
        "matchConstraints": {
            "resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                 "resources": ["pods"]},
            ]
        },
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
        "mutations": [
            {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": expression}},
        ],
    }  # fmt: skip
    if conditions:
        spec["matchConditions"] = [{"name": k, "expression": v} for k, v in conditions.items()]
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
         "metadata": {"name": name}, "spec": spec},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
         "metadata": {"name": name}, "spec": {"policyName": name}},
    ]  # fmt: skip


def storage_policy(storage_url: str) -> list[dict]:
    """Stands in for Workload Identity: a MutatingAdmissionPolicy gives every container
    STORAGE_EMULATOR_HOST, so pods reach "the bucket" through the emulator."""
    env = f'[Object.spec.containers.env{{name: "STORAGE_EMULATOR_HOST", value: "{storage_url}"}}]'
    expression = (
        "Object{spec: Object.spec{containers: object.spec.containers.map(c, "
        f"Object.spec.containers{{name: c.name, env: {env}}})}}}}"
    )
    return mutating_policy("imdb-train-storage-emulator", expression)


GPU_RESOURCE = "nvidia.com/gpu"


def gpu_policy() -> list[dict]:
    """The local cluster's stand-in for a GPU: its nodes' GPUs are capacity only and pods
    run the CPU image, so a container that asks for `nvidia.com/gpu` is told it asked for
    none (IMDB_TRAIN_GPUS=0), or the trainer would refuse to train without one (exit 2).
    Only here: on GKE the device plugin gives the container the GPUs it asked for."""
    asks = f"has(c.resources) && has(c.resources.limits) && '{GPU_RESOURCE}' in c.resources.limits"
    env = f'[Object.spec.containers.env{{name: "{contract.GPUS_ENV}", value: "0"}}]'
    expression = (
        f"Object{{spec: Object.spec{{containers: object.spec.containers.filter(c, {asks})"
        f".map(c, Object.spec.containers{{name: c.name, env: {env}}})}}}}"
    )
    asking = {"asks-for-a-gpu": f"object.spec.containers.exists(c, {asks})"}
    return mutating_policy("imdb-train-gpu-stand-in", expression, asking)


def teardown(directory: Path, node_names: list[str]) -> None:
    """What the processes leave behind once stopped: mounts under the state directory,
    the nodes' cgroups, bridges, the host link and the iptables chains."""
    unmount_under(directory)
    for name in node_names:
        remove_cgroups(name)
        shutil.rmtree(containerd_socket(directory / "nodes" / name).parent, ignore_errors=True)
    remove_networking(max(len(node_names), 8))
    remove_iptables()


def container_pid(state: cp.State, node: str, container_id: str) -> int:
    """The host PID of a pod's container (`containerStatuses[].containerID`, which is
    containerd://ID) on `node`, from that node's containerd."""
    socket = containerd_socket(state.path / "nodes" / node)
    cid = container_id.split("://", 1)[-1]
    out = run("ctr", "--address", str(socket), "-n", "k8s.io", "tasks", "ls").stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise LookupError(f"no task {cid} on node {node}")
