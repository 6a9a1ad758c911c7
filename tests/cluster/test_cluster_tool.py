"""`python -m cluster up|down` as a tool: reuse, cleanup after a kill, loopback only,
private credentials, nothing left behind. A cluster of its own, with one node and no pods."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import controlplane as cp
from cluster import kubelet
from tests.cluster.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def cluster_cli(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMDB_CLUSTER_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cluster", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def descendants(pids: set[int]) -> set[int]:
    found = set(pids)
    changed = True
    while changed:
        changed = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in found:
                continue
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in found:
                found.add(int(proc.name))
                changed = True
    return found


def listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            for fd in fds.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                addr = f[1].split(":")[0]
                out.append(
                    (
                        inodes[f[9]],
                        addr
                        if width == 32
                        else ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)),
                    )
                )
    return out


def test_up_reuses_cleans_up_listens_on_loopback_and_down_leaves_nothing(tmp_path_factory):
    # Short: the kubelet's sockets under its root (a unix socket path is at most 107 bytes).
    directory = tmp_path_factory.mktemp("t") / "c"
    first = cluster_cli(directory, "up", "--gpu-nodes", "0", "--cpu-nodes", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == f"export KUBECONFIG={directory / 'kubeconfig'}"
    state = cp.State.load(directory)
    pids = set(state.all_pids().values())
    try:
        sockets = listening(descendants(pids))
        assert sockets, "no listening sockets found"
        real = bool(state.ports.get("registry"))
        # Real nodes: the kubelets and CoreDNS on the nodes' address, private to this host.
        allowed = {"127.0.0.1", kubelet.NODE_IP} if real else {"127.0.0.1"}
        assert {addr for _, addr in sockets} <= allowed, sockets
        for name in (
            "kubeconfig",
            "state.json",
            "pki/tokens.csv",
            "pki/sa.key",
            "pki/kube-scheduler.kubeconfig",
            "pki/kube-controller-manager.kubeconfig",
        ):
            mode = stat.S_IMODE((directory / name).stat().st_mode)
            assert mode == 0o600, f"{name}: {oct(mode)}"

        again = cluster_cli(directory, "up")
        assert again.returncode == 0 and "reusing the running cluster" in again.stderr
        assert set(cp.State.load(directory).all_pids().values()) == pids

        # A killed API server: the next `up` stops what is left and starts afresh.
        os.kill(state.pids["apiserver"], signal.SIGKILL)
        fresh = cluster_cli(directory, "up", "--gpu-nodes", "0", "--cpu-nodes", "1")
        assert fresh.returncode == 0, fresh.stderr
        assert "cleaning up what a stopped or killed cluster left" in fresh.stderr
        assert not [p for p in pids if cp.alive(p)], "processes of the killed cluster remain"
        pids = set(cp.State.load(directory).all_pids().values())
        everything = descendants(pids)
    finally:
        down = cluster_cli(directory, "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in everything if cp.alive(p)], "processes left after down"
    assert not directory.exists()
    stray = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(directory).encode() in (proc / "cmdline").read_bytes():
                stray.append(proc.name)
    assert not stray, stray
    if real:
        mounts = Path("/proc/self/mounts").read_text()
        assert str(directory) not in mounts, "mounts left after down"
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert kubelet.HOST_LINK not in links and f" {kubelet.BRIDGE_PREFIX}0" not in links
        chains = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        left = [line for line in chains.splitlines() if line.startswith(":KUBE-")]
        assert not left, left
        assert not list(Path("/sys/fs/cgroup/memory").glob(f"{kubelet.CGROUP_ROOT_PREFIX}cpu-1"))
