"""A node of the local cluster: registers a Node as GKE makes them and runs the pods bound to it.

    python -m cluster.node --dir STATE --name NAME [--gpus N --accelerator TYPE --pool POOL]

What a kubelet does that the tests and users rely on, through the API server with the node's
own identity (the Node authorizer and NodeRestriction limit it to its Node and pods):
- registers the Node (labels, taints, capacity, addresses, the log port) and keeps its Lease
  in `kube-node-lease` fresh, so the node lifecycle controller sees it Ready;
- watches the pods bound to it (`spec.nodeName`) and runs each one's container in the image's
  root filesystem (cluster/runtime.py) under the pod's securityContext, in a network
  namespace of its own (cluster/network.py), with the downward API, emptyDirs and the
  service-account token the pod asks for;
- reports Pending/ContainerCreating -> Running -> Succeeded/Failed with the container's
  exit code, or ErrImagePull when the image is not on the node;
- on deletion (eviction, Job cleanup): SIGTERM to the container, SIGKILL after the grace
  period, the pod's final phase, then the pod object removed; never touches finalizers;
- serves `/containerLogs/...` over HTTPS, so `kubectl logs` and `jobs.logs` work;
- when its Node object is deleted, its containers die with it, as a vanished VM's do.
GPUs are capacity only: the containers run on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from cluster import controlplane as cp
from cluster import network
from cluster.runtime import Container, Image, Sandbox, start_container

LEASE_SECONDS = 40
RENEW_SECONDS = 10
IMAGE_RETRY_SECONDS = 10
SMP = "application/strategic-merge-patch+json"
TOKEN_SECONDS = 3600


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(msg: str) -> None:
    print(f"{now()} {msg}", flush=True)


class PodWorker:
    """Runs one pod to its end on this node; `terminate()` asks it to stop (deletion)."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]):
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.dir = agent.dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.log = self.dir / "container.log"
        self.container: Container | None = None
        self.stop = threading.Event()
        self.grace = 30
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # --- status -----------------------------------------------------------------------
    def _patch(self, status: dict[str, Any]) -> None:
        try:
            self.agent.core.patch_namespaced_pod_status(
                self.name, self.ns, {"metadata": {"uid": self.uid}, "status": status},
                _content_type=SMP,
            )  # fmt: skip
        except ApiException as e:
            if e.status not in (404, 409):
                log(f"pod {self.ns}/{self.name}: status update failed: {e.status} {e.reason}")

    def _container_name(self) -> str:
        return self.pod["spec"]["containers"][0]["name"]

    def _status(self, phase: str, state: dict, ready: bool, **extra: Any) -> dict[str, Any]:
        c = self.pod["spec"]["containers"][0]
        t = now()
        conds = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": t},
            {"type": "Ready", "status": str(ready), "lastTransitionTime": t},
        ]
        return {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "conditions": conds,
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": "running" in state,
                    "state": state,
                }
            ],
            **extra,
        }

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.agent.event(self.pod, reason, message, kind)

    # --- lifecycle ----------------------------------------------------------------------
    def terminate(self, grace: int | None) -> None:
        if grace is not None:
            self.grace = grace
        self.stop.set()

    def kill_now(self) -> None:
        """The node is gone: no grace, no status."""
        self.grace = 0
        self.stop.set()
        if self.container is not None:
            self.container.kill()

    def _run(self) -> None:
        try:
            self._run_pod()
        except Exception as e:  # the node goes on with its other pods
            log(f"pod {self.ns}/{self.name}: {traceback.format_exc()}")
            waiting = {"waiting": {"reason": "CreateContainerError", "message": repr(e)}}
            self._patch(self._status("Pending", waiting, False))
        finally:
            self.done.set()
            self.agent.finished(self)

    def _run_pod(self) -> None:
        spec = self.pod["spec"]
        start = now()
        container = spec["containers"][0]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        self._patch(self._status("Pending", waiting, False, startTime=start))
        image = self._pull(container["image"], start)
        if image is None:
            return self._finish_deleted()
        self.dir.mkdir(parents=True, exist_ok=True)
        ip = self.agent.registry.add(self.uid, network.dns_names(self.pod))
        ns = network.create_netns(self.uid, ip)
        forwards = network.Forwards(ns, self.agent.forward_ports)
        try:
            with image:
                sandbox = Sandbox(
                    # The cluster's shared hosts file itself, so peers that start later
                    # resolve (see network.Registry).
                    hosts=self.agent.registry.hosts,
                    resolv_conf=network.resolv_conf(self.ns),
                    netns=ns,
                    projected=self._projected_volumes(),
                )
                pod = {**self.pod, "status": {"podIP": ip, "hostIP": "127.0.0.1"}}
                try:
                    self.container = start_container(
                        image, pod, container, self.dir, sandbox,
                        extra_env=self.agent.pod_env, log=self.log,
                    )  # fmt: skip
                except ValueError as e:
                    term = {"terminated": {"exitCode": 128, "reason": "CreateContainerError",
                                           "message": str(e), "finishedAt": now()}}  # fmt: skip
                    self._patch(self._status("Failed", term, False, podIP=ip))
                    self._event("Failed", f"Error: {e}", "Warning")
                    return self._finish_deleted()
                # For tests and debugging: the container's PID 1 on the host.
                (self.dir / "pid1").write_text(str(self.container.pid1))
                started = now()
                ips = {"podIP": ip, "podIPs": [{"ip": ip}]}
                running = {"running": {"startedAt": started}}
                self._patch(self._status("Running", running, True, startTime=start, **ips))
                self._event("Started", f"Started container {container['name']}")
                code = self._wait()
                reason = "Completed" if code == 0 else "Error"
                term = {"terminated": {"exitCode": code, "reason": reason,
                                       "startedAt": started, "finishedAt": now()}}  # fmt: skip
                if not self.agent.gone.is_set():
                    phase = "Succeeded" if code == 0 else "Failed"
                    self._patch(self._status(phase, term, False, startTime=start, **ips))
        finally:
            forwards.close()
            network.delete_netns(self.uid)
            self.agent.registry.remove(self.uid)
        self._finish_deleted()

    def _pull(self, ref: str, start: str) -> Image | None:
        """The image from the node's store (buildah); ErrImagePull until it is there."""
        first = True
        while not self.stop.is_set():
            try:
                return Image(ref, prefix=network.container_prefix(self.agent.cluster_dir))
            except subprocess.CalledProcessError:
                msg = (f"image {ref!r} is not on this node (the local cluster pulls from no "
                       "registry: build it with `make image-cpu`)")  # fmt: skip
                reason = "ErrImagePull" if first else "ImagePullBackOff"
                self._patch(self._status(
                    "Pending", {"waiting": {"reason": reason, "message": msg}}, False,
                    startTime=start,
                ))  # fmt: skip
                if first:
                    self._event("Failed", f"Failed to pull image {ref!r}: not found", "Warning")
                first = False
                self.stop.wait(IMAGE_RETRY_SECONDS)
        return None

    def _wait(self) -> int:
        assert self.container is not None
        proc = self.container.proc
        while proc.poll() is None:
            if self.stop.wait(0.2):
                self._kill_gracefully()
                break
        return self.container.exit_code()

    def _kill_gracefully(self) -> None:
        assert self.container is not None
        proc = self.container.proc
        if self.grace > 0 and not self.agent.gone.is_set():
            self._event("Killing", f"Stopping container {self._container_name()}")
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.container.pid1, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.grace)
        self.container.kill()

    def _finish_deleted(self) -> None:
        """After the last status: a pod being deleted is removed (grace 0, this uid only)."""
        if self.agent.gone.is_set():
            return
        try:
            pod = self.agent.core.read_namespaced_pod(self.name, self.ns)
        except ApiException:
            return
        if pod.metadata.uid == self.uid and pod.metadata.deletion_timestamp:
            self.agent.delete_pod(self.ns, self.name, self.uid)

    def _projected_volumes(self) -> dict[str, Path]:
        """The kube-api-access volume ServiceAccount admission adds: a token from the
        TokenRequest API bound to this pod, the cluster's CA and the namespace."""
        out: dict[str, Path] = {}
        for vol in self.pod["spec"].get("volumes") or []:
            projected = vol.get("projected")
            if not projected:
                continue
            d = self.dir / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            for source in projected.get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    token = self.agent.token_for(self.pod, sat.get("expirationSeconds"))
                    (d / sat["path"]).write_text(token)
                if "configMap" in source:
                    cm = self.agent.core.read_namespaced_config_map(
                        source["configMap"]["name"], self.ns
                    )
                    for item in source["configMap"].get("items") or []:
                        (d / item["path"]).write_text((cm.data or {}).get(item["key"], ""))
                if "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items") or []:
                        if item.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                            (d / item["path"]).write_text(self.ns)
            for f in d.iterdir():
                f.chmod(0o644)
            out[vol["name"]] = d
        return out


class NodeAgent:
    def __init__(self, args: argparse.Namespace):
        self.name = args.name
        self.dir = Path(args.dir) / "nodes" / args.name
        self.dir.mkdir(parents=True, exist_ok=True)
        state = json.loads((Path(args.dir) / "state.json").read_text())
        cfg = client.Configuration()
        cfg.host = f"https://127.0.0.1:{state['ports']['apiserver']}"
        cfg.ssl_ca_cert = str(Path(args.dir) / "pki" / "apiserver" / "apiserver.crt")
        cfg.api_key = {"authorization": f"Bearer {state['tokens'][f'system:node:{self.name}']}"}
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.auth = client.AuthenticationV1Api(self.api)
        self.args = args
        self.cluster_dir = Path(args.dir)
        self.registry = network.Registry(Path(args.dir) / "network")
        self.pod_env = dict(kv.split("=", 1) for kv in args.pod_env)
        self.forward_ports = [state["ports"]["apiserver"], *args.forward]
        self.pod_env.setdefault("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        self.pod_env.setdefault("KUBERNETES_SERVICE_PORT", str(state["ports"]["apiserver"]))
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.gone = threading.Event()
        self.stopping = threading.Event()

    # --- registration --------------------------------------------------------------------
    def node_object(self) -> dict[str, Any]:
        a = self.args
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "cloud.google.com/gke-nodepool": a.pool,
            "node.kubernetes.io/instance-type": a.machine_type,
            "topology.kubernetes.io/zone": a.zone,
        }
        taints = []
        capacity = {
            "cpu": str(a.cpu), "memory": a.memory, "pods": "110",
            "ephemeral-storage": a.ephemeral_storage,
        }  # fmt: skip
        if a.gpus:
            labels["cloud.google.com/gke-accelerator"] = a.accelerator
            labels["cloud.google.com/gke-gpu"] = "true"
            capacity["nvidia.com/gpu"] = str(a.gpus)
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
        if a.spot:
            labels["cloud.google.com/gke-spot"] = "true"
        t = now()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.args.port}},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "imdb-train node agent is posting ready status",
                        "lastHeartbeatTime": t,
                        "lastTransitionTime": t,
                    },
                    *[
                        {
                            "type": c,
                            "status": "False",
                            "reason": f"KubeletHas{r}",
                            "lastHeartbeatTime": t,
                            "lastTransitionTime": t,
                        }
                        for c, r in (
                            ("MemoryPressure", "SufficientMemory"),
                            ("DiskPressure", "NoDiskPressure"),
                            ("PIDPressure", "SufficientPID"),
                        )
                    ],
                ],  # fmt: skip
                "nodeInfo": {
                    "machineID": self.name,
                    "systemUUID": self.name,
                    "bootID": self.name,
                    "kernelVersion": os.uname().release,
                    "osImage": "imdb-train local node",
                    "containerRuntimeVersion": "imdb-train-runtime://0.1",
                    "kubeletVersion": self.args.version,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },  # fmt: skip
            },
        }

    def register(self) -> None:
        body = self.node_object()
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        # Status as the kubelet posts it (create may drop status fields on some releases).
        self.core.patch_node_status(self.name, {"status": body["status"]}, _content_type=SMP)

    def renew_lease(self) -> None:
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            self.coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": spec},
                                              _content_type=SMP)  # fmt: skip
        except ApiException as e:
            if e.status != 404:
                raise
            node = self.core.read_node(self.name)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name,
                     "uid": node.metadata.uid}  # fmt: skip
            self.coord.create_namespaced_lease("kube-node-lease", {
                "metadata": {"name": self.name, "ownerReferences": [owner]}, "spec": spec,
            })  # fmt: skip

    def heartbeat(self) -> None:
        while not self.stopping.is_set():
            try:
                self.renew_lease()
            except Exception as e:  # the API server may be restarting; try again
                log(f"lease renewal failed: {e}")
            self.stopping.wait(RENEW_SECONDS)

    # --- pods ----------------------------------------------------------------------------
    def event(self, pod: dict, reason: str, message: str, kind: str = "Normal") -> None:
        meta = pod["metadata"]
        t = now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace":
                               meta["namespace"], "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": kind,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        }  # fmt: skip
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(meta["namespace"], body)

    def token_for(self, pod: dict, seconds: int | None) -> str:
        meta = pod["metadata"]
        req = {
            "spec": {
                "audiences": [],
                "expirationSeconds": max(int(seconds or TOKEN_SECONDS), 600),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                   "uid": meta["uid"]},
            }
        }  # fmt: skip
        sa = pod["spec"].get("serviceAccountName") or "default"
        resp = self.core.create_namespaced_service_account_token(sa, meta["namespace"], req)
        return resp.status.token

    def delete_pod(self, ns: str, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(grace_period_seconds=0,
                                      preconditions=client.V1Preconditions(uid=uid))  # fmt: skip
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(name, ns, body=body)

    def finished(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                # Remembered as done, so later events for this uid start nothing.
                self.workers[worker.uid] = worker

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                phase = (pod.get("status") or {}).get("phase")
                if kind == "DELETED" or phase in ("Succeeded", "Failed"):
                    if meta.get("deletionTimestamp") and kind != "DELETED":
                        self.delete_pod(meta["namespace"], meta["name"], uid)
                    return
                if meta.get("deletionTimestamp"):
                    self.delete_pod(meta["namespace"], meta["name"], uid)
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.thread.start()
                return
        if kind == "DELETED":
            worker.kill_now()
        elif meta.get("deletionTimestamp"):
            if worker.done.is_set():
                self.delete_pod(meta["namespace"], meta["name"], uid)
            else:
                worker.terminate(meta.get("deletionGracePeriodSeconds"))

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self.stopping.is_set():
            try:
                pods = self.api.sanitize_for_serialization(
                    self.core.list_pod_for_all_namespaces(field_selector=selector)
                )
                for pod in pods["items"]:
                    self.on_pod("ADDED", pod)
                rv = pods["metadata"]["resourceVersion"]
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=rv, timeout_seconds=300,
                                   _preload_content=False):  # fmt: skip
                    obj = ev["raw_object"]
                    if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.on_pod(ev["type"], obj)
                    if self.stopping.is_set():
                        break
            except Exception as e:  # a 410 Gone or a restarting API server: list again
                if not self.stopping.is_set():
                    log(f"pod watch restarts: {e}")
                    time.sleep(1)

    def watch_node(self) -> None:
        """A deleted Node takes its pods' processes with it (the VM is gone)."""
        selector = f"metadata.name={self.name}"
        while not self.stopping.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(self.core.list_node, field_selector=selector,
                                   timeout_seconds=300):  # fmt: skip
                    if ev["type"] == "DELETED":
                        log(f"node {self.name} was deleted: its pods die with it")
                        self.gone.set()
                        with self.lock:
                            workers = list(self.workers.values())
                        for wk in workers:
                            wk.kill_now()
                        self.stopping.set()
                        return
            except Exception as e:
                if not self.stopping.is_set():
                    log(f"node watch restarts: {e}")
                    time.sleep(1)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for wk in workers:
            wk.kill_now()
        for wk in workers:
            wk.done.wait(10)

    def log_path(self, ns: str, pod: str) -> tuple[Path | None, PodWorker | None]:
        with self.lock:
            matches = [w for w in self.workers.values() if w.ns == ns and w.name == pod]
        if not matches:
            return None, None
        w = matches[-1]
        return w.log, w


def _log_handler(agent: NodeAgent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # the agent's log has its own lines
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                return self._error(404, "not found")
            _, ns, pod, _container = parts
            q = urllib.parse.parse_qs(url.query)
            path, worker = agent.log_path(ns, pod)
            if path is None or not path.exists():
                return self._error(404, f"container of pod {ns}/{pod} has no log on this node")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = path.read_bytes()
            if "tailLines" in q:
                n = int(q["tailLines"][0])
                data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
            self._chunk(data)
            offset = path.stat().st_size
            follow = q.get("follow", ["false"])[0] == "true"
            while follow and worker is not None and not worker.done.is_set():
                time.sleep(0.3)
                size = path.stat().st_size
                if size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        self._chunk(f.read(size - offset))
                    offset = size
            if follow and worker is not None:
                with open(path, "rb") as f:
                    f.seek(offset)
                    self._chunk(f.read())
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, data: bytes) -> None:
            if data:  # an empty chunk would end the response
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        def _error(self, code: int, msg: str) -> None:
            body = msg.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve_logs(agent: NodeAgent, port: int, cert: Path, key: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _log_handler(agent))
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cluster.node", description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="the cluster's state directory")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True, help="the log server's port")
    p.add_argument("--pool", default="default-pool")
    p.add_argument("--cpu", type=int, default=8)
    p.add_argument("--memory", default="32Gi")
    p.add_argument("--ephemeral-storage", default="100Gi")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--accelerator", default="nvidia-l4")
    p.add_argument("--machine-type", default="g2-standard-8")
    p.add_argument("--zone", default="us-central1-a")
    p.add_argument("--spot", action="store_true")
    p.add_argument("--version", default="v0.0.0")
    p.add_argument(
        "--pod-env",
        action="append",
        default=[],
        metavar="K=V",
        help="set in every container (what the cluster gives pods)",
    )
    p.add_argument(
        "--forward",
        action="append",
        type=int,
        default=[],
        metavar="PORT",
        help="a host loopback port reachable at the same port of each pod",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    agent = NodeAgent(args)
    network.setup_bridge()
    # The API server does not verify it unless --kubelet-certificate-authority is set.
    cert, key = cp.self_signed(agent.dir / "kubelet.crt", agent.dir / "kubelet.key")
    serve_logs(agent, args.port, cert, key)
    agent.register()
    agent.renew_lease()
    log(f"node {args.name} registered ({args.gpus} GPUs, pool {args.pool}); logs on :{args.port}")

    def on_signal(signum: int, _frame: Any) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for target in (agent.heartbeat, agent.watch_pods, agent.watch_node):
        threading.Thread(target=target, daemon=True).start()
    while not agent.stopping.wait(0.5):
        pass
    agent.shutdown()
    log(f"node {args.name} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
