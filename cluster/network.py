"""Pod networking for the local cluster: a network namespace and address per pod, a bridge
between them, a hosts file standing in for the cluster's DNS, and loopback forwards.

Each pod gets its own network namespace (`ip netns`), a veth pair into the bridge
`BRIDGE` and an address in `POD_CIDR`, so two workers of a group can listen on the same port
as they do on separate nodes. Names resolve through one hosts file shared by every pod of
the cluster (rewritten in place, under a lock, as pods come and go; glibc rereads it at each
lookup): `<hostname>.<subdomain>[.<namespace>.svc.cluster.local]` for pods of a headless
Service, as cluster DNS answers. Host services that pods use (the API server, the storage
emulator) stay on the host's 127.0.0.1: a forward inside each pod's namespace listens on the
same port of the pod's 127.0.0.1 and connects to the host's, as GKE's metadata server is
reached at a fixed address from every pod.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

BRIDGE = "imdbtr0"
POD_CIDR = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = next(POD_CIDR.hosts())  # the bridge's own address
CLUSTER_DOMAIN = "cluster.local"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def setup_bridge() -> None:
    """The bridge every pod's veth joins (idempotent)."""
    made = _ip("link", "add", BRIDGE, "type", "bridge", check=False)
    if made.returncode != 0 and "File exists" not in made.stderr:
        raise RuntimeError(f"cannot make the pod bridge {BRIDGE}: {made.stderr.strip()}")
    _ip("addr", "replace", f"{GATEWAY}/{POD_CIDR.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def teardown_bridge() -> None:
    _ip("link", "del", BRIDGE, check=False)


def container_prefix(cluster_dir: Path) -> str:
    """The name prefix of the working containers of one cluster's pods (buildah's storage
    is the machine's: the image tests and other clusters have theirs)."""
    digest = hashlib.sha256(str(cluster_dir.resolve()).encode()).hexdigest()[:8]
    return f"imdb-cluster-{digest}-"


def netns_name(uid: str) -> str:
    return f"imdbtr-{uid[:13]}"


class Registry:
    """Cluster-wide address book under one lock: pod uid -> address and DNS names.

    The node agents are separate processes; they share `dir/pods.json` and the hosts file
    `dir/hosts` that every pod mounts as /etc/hosts.
    """

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.book = directory / "pods.json"
        self.hosts = directory / "hosts"
        with self._locked():
            if not self.hosts.exists():
                self._write_hosts({})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict]:
        try:
            return json.loads(self.book.read_text())
        except (OSError, ValueError):
            return {}

    def _write_hosts(self, book: dict[str, dict]) -> None:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{e['ip']}\t{' '.join(e['names'])}" for e in book.values() if e["names"]]
        text = "\n".join(lines) + "\n"
        # In place: pods hold bind mounts of this inode.
        with open(self.hosts, "r+" if self.hosts.exists() else "w") as f:
            f.seek(0)
            f.write(text)
            f.truncate()

    def add(self, uid: str, names: Iterable[str]) -> str:
        """An address for the pod, and its names in the hosts file."""
        with self._locked():
            book = self._read()
            used = {e["ip"] for e in book.values()} | {str(GATEWAY)}
            start = int.from_bytes(bytes.fromhex(uid.replace("-", "")[:8]), "big")
            size = POD_CIDR.num_addresses - 2
            for k in range(size):
                ip = str(POD_CIDR.network_address + 1 + (start + k) % size)
                if ip not in used:
                    break
            else:
                raise RuntimeError(f"no free pod address in {POD_CIDR}")
            book[uid] = {"ip": ip, "names": list(names)}
            self.book.write_text(json.dumps(book))
            self._write_hosts(book)
            return ip

    def remove(self, uid: str) -> None:
        with self._locked():
            book = self._read()
            if book.pop(uid, None) is not None:
                self.book.write_text(json.dumps(book))
                self._write_hosts(book)


def dns_names(pod: dict) -> list[str]:
    """What cluster DNS answers for a pod: its hostname under its headless Service."""
    spec, ns = pod["spec"], pod["metadata"]["namespace"]
    host, sub = spec.get("hostname"), spec.get("subdomain")
    if not (host and sub):
        return []
    return [f"{host}.{sub}", f"{host}.{sub}.{ns}.svc", f"{host}.{sub}.{ns}.svc.{CLUSTER_DOMAIN}"]


def resolv_conf(namespace: str) -> str:
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\nnameserver {GATEWAY}\noptions ndots:5\n"


def create_netns(uid: str, ip: str) -> str:
    """A namespace with lo up and eth0 on the bridge at `ip`; returns its name."""
    ns = netns_name(uid)
    host_end = f"veth{uid.replace('-', '')[:10]}"
    delete_netns(uid)
    _ip("netns", "add", ns)
    _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", host_end, "master", BRIDGE, "up")
    _ip("-n", ns, "addr", "add", f"{ip}/{POD_CIDR.prefixlen}", "dev", "eth0")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "route", "add", "default", "via", str(GATEWAY))
    return ns


def delete_netns(uid: str) -> None:
    _ip("link", "del", f"veth{uid.replace('-', '')[:10]}", check=False)
    _ip("netns", "del", netns_name(uid), check=False)


def _listen_in(ns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port inside namespace `ns` (setns on this thread
    only, then back: the socket keeps the namespace it was made in)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            return sock
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the node's namespace")
    finally:
        os.close(own)
        os.close(target)


class Forwards:
    """Host loopback ports made reachable on the same ports of a pod's 127.0.0.1."""

    def __init__(self, ns: str, ports: Iterable[int]):
        self.socks: list[socket.socket] = []
        for port in ports:
            # A thread of its own: setns must not move the agent's other threads.
            box: list = []
            t = threading.Thread(target=lambda p=port, b=box: b.append(_listen_in(ns, p)))
            t.start()
            t.join()
            if not box:
                raise RuntimeError(f"could not forward port {port} into {ns}")
            sock = box[0]
            self.socks.append(sock)
            threading.Thread(target=self._accept, args=(sock, port), daemon=True).start()

    def _accept(self, sock: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn, port), daemon=True).start()

    @staticmethod
    def _relay(conn: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
        t.start()
        pipe(conn, upstream)
        t.join()
        conn.close()
        upstream.close()

    def close(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
