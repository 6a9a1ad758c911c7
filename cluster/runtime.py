"""The container runtime of the local cluster's nodes: runs one container of a pod in a built
image's root filesystem, as a kubelet with runc would.

What is reproduced from the pod spec: the command and args (with `$(VAR)` expansion) over
the image's entrypoint and cmd, the env (image env, container env, the downward-API fields a
pod has: labels, name, namespace, pod IP, and Kubernetes' JOB_COMPLETION_INDEX on Indexed
Jobs), volumeMounts of emptyDirs as tmpfs of their sizeLimit, the securityContext
(runAsUser, runAsGroup, fsGroup, readOnlyRootFilesystem, allowPrivilegeEscalation: false as
no_new_privs, no capabilities: a non-root uid has none), its own PID namespace with the
entrypoint (tini) as PID 1, and the pod's /etc/hosts and /etc/hostname. The network is the
pod's own namespace when one is given (cluster/network.py), else the host's; seccomp and
cgroup limits are not applied. Needs root, buildah, unshare, setpriv and chroot.

Used by the node agent (cluster/node.py) and by the image tests (tests/image), which start
a rendered Job's container directly, without a control plane.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
IMAGE_ENV = "IMDB_TRAIN_TEST_IMAGE"  # the image under test (make image-test sets it)
# A fallback for a pod's resolv.conf; the host's is used when there is one.
RESOLV_CONF = "nameserver 127.0.0.1\n"
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def tmpfs_bytes(quantity: str | None) -> int:
    """A sizeLimit as bytes (an emptyDir without one gets 1 GiB here)."""
    if not quantity:
        return 2**30
    m = _QUANTITY.match(str(quantity))
    if not m:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    user: str


class Image:
    """A working container of IMAGE: its root filesystem mounted on the host (buildah)."""

    def __init__(self, image: str, prefix: str = "imdb-train-image-test-"):
        self.image = image
        # Working containers are named by their owner, which alone removes leftovers.
        self.name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.rootfs: Path | None = None
        raw = subprocess.run(
            ["buildah", "inspect", "--type", "image", image],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        cfg = json.loads(raw)["OCIv1"]["config"]
        self.config = ImageConfig(
            entrypoint=cfg.get("Entrypoint") or [],
            cmd=cfg.get("Cmd") or [],
            env=dict(e.split("=", 1) for e in cfg.get("Env") or []),
            workdir=cfg.get("WorkingDir") or "/",
            user=cfg.get("User") or "",
        )

    def __enter__(self) -> Image:
        subprocess.run(
            ["buildah", "from", "--pull=never", "--name", self.name, self.image],
            check=True, capture_output=True,
        )  # fmt: skip
        mount = subprocess.run(
            ["buildah", "mount", self.name], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.rootfs = Path(mount)
        # A container runtime creates these in the container's writable layer before it
        # bind-mounts the pod's files over them; the working container is that layer.
        for name in ("hosts", "hostname", "resolv.conf"):
            (self.rootfs / "etc" / name).touch(exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["buildah", "umount", self.name], capture_output=True)
        subprocess.run(["buildah", "rm", self.name], capture_output=True)

    def image_size(self) -> int:
        return int(
            subprocess.run(
                ["buildah", "inspect", "--type", "image", "--format", "{{.Docker.Size}}",
                 self.image],
                capture_output=True, text=True, check=True,
            ).stdout.strip() or 0
        )  # fmt: skip


def _field_ref(path: str, pod: Mapping[str, Any]) -> str:
    """The downward API's fieldRef values, from the pod as the node sees it."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    if path == "metadata.name":
        return meta["name"]
    if path == "metadata.namespace":
        return meta["namespace"]
    if path == "metadata.uid":
        return meta.get("uid", "")
    if path in ("status.podIP", "status.hostIP"):
        return status.get(path.split(".")[1]) or "127.0.0.1"
    if path == "spec.nodeName":
        return spec.get("nodeName") or "localhost"
    if path == "spec.serviceAccountName":
        return spec.get("serviceAccountName", "default")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise ValueError(f"unsupported downward API field {path!r}")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def container_env(
    image: ImageConfig, container: Mapping[str, Any], pod: Mapping[str, Any]
) -> dict[str, str]:
    env = dict(image.env)
    env["HOSTNAME"] = pod["spec"].get("hostname") or pod["metadata"]["name"]
    index = (pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION)
    if index is not None:  # the Job controller sets both on an Indexed Job's pods
        env["JOB_COMPLETION_INDEX"] = str(index)
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
        elif "valueFrom" in var and "resourceFieldRef" in var["valueFrom"]:
            env[var["name"]] = _resource_field_ref(var["valueFrom"]["resourceFieldRef"], container)
        elif "valueFrom" in var:
            ref = var["valueFrom"].get("fieldRef")
            if not ref:
                raise ValueError(f"unsupported env source for {var['name']}: {var['valueFrom']}")
            env[var["name"]] = _field_ref(ref["fieldPath"], pod)
        else:
            env[var["name"]] = ""
    return env


def _cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _resource_field_ref(ref: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    """The downward API's resourceFieldRef for CPU, as the kubelet fills it in: the
    container's limit (else the node's cores) divided by the divisor, rounded up."""
    kind, _, name = ref["resource"].partition(".")
    if name != "cpu" or kind not in ("limits", "requests"):
        raise ValueError(f"unsupported resourceFieldRef {ref}: only limits.cpu and requests.cpu")
    given = (container.get("resources") or {}).get(kind, {}).get("cpu")
    cores = _cpu_cores(str(given)) if given else float(os.cpu_count() or 1)
    # The API server stores an unset divisor as "0" and the kubelet reads that as 1.
    divisor = _cpu_cores(str(ref.get("divisor") or "1")) or 1.0
    return str(max(1, math.ceil(cores / divisor)))


def container_argv(
    image: ImageConfig, container: Mapping[str, Any], env: Mapping[str, str]
) -> list[str]:
    """Kubernetes' rules: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
    if container.get("command"):
        argv = [*container["command"], *(container.get("args") or [])]
    else:
        argv = [*image.entrypoint, *(container.get("args") or image.cmd)]
    return [_expand(a, env) for a in argv]


# Runs in new mount and PID namespaces (as root), builds the pod's view of the filesystem
# and execs the container's process, which becomes PID 1 there.
_SETUP = r"""
set -eu
exec 2>&1  # the container's stderr joins its stdout (the log); unshare's own stays apart
root=$1 new=$2 ro=$3 uid=$4 gid=$5 fsgroup=$6 etc=$7 mounts=$8 workdir=$9
shift 9
mount --make-rprivate /
mount --bind "$root" "$new"
# Mount points are made in the container's writable layer, before the root turns read-only.
while IFS=' ' read -r kind path arg; do [ -z "$path" ] || mkdir -p "$new$path"; done < "$mounts"
if [ "$ro" = 1 ]; then mount -o remount,bind,ro "$new"; fi
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -o bind,ro /sys "$new/sys"
mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs "$new/dev"
for d in null zero full random urandom tty; do
    touch "$new/dev/$d"; mount --bind "/dev/$d" "$new/dev/$d"
done
mkdir "$new/dev/shm" "$new/dev/pts"
mount -t tmpfs -o nosuid,nodev,noexec,size=65536k shm "$new/dev/shm"
ln -s /proc/self/fd "$new/dev/fd"
ln -s /proc/self/fd/0 "$new/dev/stdin"
ln -s /proc/self/fd/1 "$new/dev/stdout"
ln -s /proc/self/fd/2 "$new/dev/stderr"
for f in hosts hostname resolv.conf; do mount --bind "$etc/$f" "$new/etc/$f"; done
# emptyDirs: tmpfs of the sizeLimit, group-owned by fsGroup and setgid, as the kubelet does;
# projected volumes (a service account's token): the node's files, read-only.
while IFS=' ' read -r kind path arg; do
    [ -n "$path" ] || continue
    if [ "$kind" = tmpfs ]; then
        mount -t tmpfs -o "nosuid,nodev,size=$arg,mode=2777,gid=$fsgroup" tmpfs "$new$path"
    else
        mount --bind "$arg" "$new$path"; mount -o remount,bind,ro "$new$path"
    fi
done < "$mounts"
exec setpriv --no-new-privs \
    chroot --userspec="$uid:$gid" --groups="$fsgroup" "$new" \
    /usr/bin/env -i -C "$workdir" "$@"
"""


@dataclass
class Container:
    """One running container of a pod; `proc` is `unshare`, `pid1` the container's PID 1."""

    pod: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    stdout: list[str] = field(default_factory=list)

    @property
    def pid1(self) -> int:
        """The host pid of the container's PID 1 (unshare's only child)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            with contextlib.suppress(FileNotFoundError):
                pids = children.read_text().split()
                if pids:
                    return int(pids[0])
            time.sleep(0.05)
        raise RuntimeError("the container's PID 1 did not start")

    def wait_exec(self, comm: str, timeout: float = 30) -> int:
        """PID 1's host pid once the setup has exec'd into the program named `comm`."""
        pid = self.pid1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return pid
            time.sleep(0.05)
        raise RuntimeError(f"PID 1 is not {comm} after {timeout}s:\n{self.tail()}")

    def lines(self, timeout: float) -> Iterator[str]:
        """stdout and stderr lines as they come (both go to one pipe, as in `kubectl logs`)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.stdout.append(line)
            yield line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end after {timeout}s:\n{self.tail()}")

    def wait(self, timeout: float) -> int:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"still running after {timeout}s:\n{self.tail()}") from None
        self.stdout.append(out or "")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)  # --kill-child takes PID 1 along
            self.proc.wait(timeout=30)

    def exit_code(self) -> int:
        """The container's exit code as the kubelet reports it, once `proc` has ended: its
        PID 1's status, 128 + the signal's number when a signal ended it. (unshare turns a
        child killed by a signal into its own exit 1 here, saying so on its stderr, which
        start_container keeps apart from the log: PID 1 of a PID namespace dies of a
        signal only by SIGKILL.)"""
        code = self.proc.wait()
        if code < 0:
            return 128 - code
        err = self.proc.stderr.read() if self.proc.stderr else ""
        if code == 1 and "sigprocmask" in (err.decode() if isinstance(err, bytes) else err):
            return 128 + signal.SIGKILL
        return code

    @property
    def output(self) -> str:
        return "".join(self.stdout)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-n:])


@dataclass
class Sandbox:
    """What the node gives a pod's containers besides the image: /etc/hosts (its text, or a
    file of the node's to mount, which the node may rewrite in place), /etc/resolv.conf, a
    network namespace (None: the host's network), and projected volumes already written on
    the node (volume name -> directory)."""

    hosts: str | Path
    resolv_conf: str
    netns: str | None = None
    projected: dict[str, Path] = field(default_factory=dict)


def start_container(
    image: Image,
    pod: dict[str, Any],
    container: Mapping[str, Any],
    pod_dir: Path,
    sandbox: Sandbox,
    *,
    extra_env: Mapping[str, str] | None = None,
    env_override: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Container:
    """Start `container` of `pod` in `image`'s root filesystem under the pod's securityContext.

    extra_env: what the cluster provides and the manifest does not name (the GCS emulator's
    address stands in for Workload Identity's metadata server). env_override: values replaced
    after rendering. log: a file for stdout and stderr (else a pipe, read by Container.lines).

    Raises:
        ValueError: the pod asks for something this runtime does not do (the kubelet would
            refuse it, or it is not supported here).
    """
    assert image.rootfs is not None, "enter the Image first"
    spec = pod["spec"]
    config = image.config
    env = container_env(config, container, pod)
    env.update(extra_env or {})
    env.update(env_override or {})
    argv = container_argv(config, container, env)
    sc_pod = spec.get("securityContext") or {}
    sc = {**sc_pod, **(container.get("securityContext") or {})}
    uid = sc.get("runAsUser", config.user.split(":")[0] or 0)
    gid = sc.get("runAsGroup", uid)
    fs_group = sc_pod.get("fsGroup", gid)
    if sc.get("runAsNonRoot") and int(uid) == 0:
        raise ValueError("runAsNonRoot with uid 0: the kubelet would refuse this pod")
    if (sc.get("capabilities") or {}).get("add"):
        raise ValueError("capabilities.add is not supported here")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    lines = []
    for vm in container.get("volumeMounts") or []:
        volume = volumes[vm["name"]]
        if "emptyDir" in volume:
            size = tmpfs_bytes(volume["emptyDir"].get("sizeLimit"))
            lines.append(f"tmpfs {vm['mountPath']} {size}")
        elif vm["name"] in sandbox.projected:
            lines.append(f"bind {vm['mountPath']} {sandbox.projected[vm['name']]}")
        else:
            raise ValueError(f"volume {vm['name']}: only emptyDir and projected are supported")

    pod_dir.mkdir(parents=True, exist_ok=True)
    newroot = pod_dir / "root"
    newroot.mkdir(exist_ok=True)
    (pod_dir / "mounts").write_text("\n".join(lines) + "\n")
    etc = pod_dir / "etc"
    etc.mkdir(exist_ok=True)
    hostname = spec.get("hostname") or pod["metadata"]["name"]
    (etc / "hostname").write_text(hostname + "\n")
    if isinstance(sandbox.hosts, Path):
        (etc / "hosts").unlink(missing_ok=True)
        (etc / "hosts").symlink_to(sandbox.hosts)  # mount --bind follows it to the file
    else:
        (etc / "hosts").write_text(sandbox.hosts)
    (etc / "resolv.conf").write_text(sandbox.resolv_conf)
    env_args = [f"{k}={v}" for k, v in env.items()]
    cmd = [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--uts",
        "sh", "-c", f"hostname {shlex.quote(hostname)}; " + _SETUP, "setup",
        str(image.rootfs), str(newroot),
        "1" if sc.get("readOnlyRootFilesystem") else "0",
        str(uid), str(gid), str(fs_group), str(etc), str(pod_dir / "mounts"),
        config.workdir, *env_args, *argv,
    ]  # fmt: skip
    if sandbox.netns:
        cmd = ["ip", "netns", "exec", sandbox.netns, *cmd]
    if log is not None:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
    else:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    return Container(pod=pod, argv=argv, env=env, proc=proc, workdir=pod_dir)
