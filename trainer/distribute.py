"""Distribution strategy factory: MirroredStrategy (GPUs, or N logical CPUs), or
MultiWorkerMirroredStrategy when TF_CONFIG (or an Indexed Job's environment) names workers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping

from trainer import contract
from trainer.contract import (
    COLLECTIVE_TIMEOUT_ENV,
    COMPLETION_INDEX_ENV,
    GPUS_ENV,
    PEER_TIMEOUT_DEFAULT,
    PEER_TIMEOUT_ENV,
    WORKER_HOSTS_ENV,
    KnownError,
)
from trainer.numbers import bounded_float, bounded_int
from trainer.termination import RetryableError

# The TF_CONFIG task types a MultiWorkerMirroredStrategy group is made of.
TASK_TYPES = ("chief", "worker")


class DistributeError(KnownError, ValueError):
    """The multi-worker environment is inconsistent."""


class GpuImageError(DistributeError):
    """The pod asked for GPUs, but its TensorFlow was built without CUDA (a CPU image)."""


class GpuMissingError(KnownError):
    """The pod asked for more GPUs than TensorFlow sees: the node's driver or device plugin."""

    exit_code = contract.EXIT_NO_GPU


class GroupNotFormedError(RetryableError):
    """The worker group did not form in time: nothing was trained, so it is no failure of
    training (exit 78, which the Job does not count against backoffLimit)."""

    exit_code = contract.EXIT_GROUP_NOT_FORMED


# Where the NVIDIA kernel driver says its version (the device plugin mounts it on GKE).
DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"


def gpus_requested(env: Mapping[str, str] | None = None) -> int:
    """The GPUs this pod asked for (IMDB_TRAIN_GPUS, set by the Job); 0 when unset.

    Raises:
        DistributeError: not a non-negative integer.
    """
    env = os.environ if env is None else env
    raw = env.get(GPUS_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise DistributeError(f"invalid {GPUS_ENV} {raw!r}: expected a number of GPUs (0, 1, ...)")
    return int(raw)


def _driver_version() -> str | None:
    try:
        with open(DRIVER_VERSION_FILE) as f:
            first = f.readline()
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+(\S+)", first)
    return m.group(1) if m else first.strip() or None


def _gpu_name(tf, gpu) -> str:
    """The GPU's model ("NVIDIA L4") where TensorFlow can say it, else its device name."""
    try:
        return tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name
    except (RuntimeError, ValueError):
        return gpu.name


def devices() -> dict:
    """What this process trains on, as TensorFlow reports it: the GPUs it sees, the CUDA
    and cuDNN versions it was built with, and the NVIDIA driver (None where there is none)."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    names = [_gpu_name(tf, gpu) for gpu in gpus]
    return {
        "gpus_requested": gpus_requested(),
        "gpus": names,
        "cpus": len(tf.config.list_physical_devices("CPU")),
        "cuda_build": bool(build.get("is_cuda_build")),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "driver_version": _driver_version(),
    }


def describe_devices(found: dict) -> str:
    """One line: the GPUs found, the driver and the CUDA/cuDNN TensorFlow was built with."""
    gpus = ", ".join(found.get("gpus") or []) or "none"
    if not found.get("cuda_build"):
        cuda = "TensorFlow built without CUDA"
    else:
        cuda = f"CUDA {found.get('cuda_version')}, cuDNN {found.get('cudnn_version')}"
    return f"GPUs {gpus}; driver {found.get('driver_version') or 'none'}; {cuda}"


def check_gpus(found: dict) -> None:
    """Refuse to train on fewer GPUs than the pod asked for (TensorFlow would use the CPU).

    Raises:
        GpuImageError: the image's TensorFlow has no CUDA (exit 2: every node fails alike).
        GpuMissingError: a CUDA build that sees too few GPUs (exit 77: the node's fault).
    """
    asked, seen = int(found.get("gpus_requested") or 0), len(found.get("gpus") or [])
    if seen >= asked:
        return
    what = f"the pod asked for {asked} GPU(s) ({GPUS_ENV}), TensorFlow sees {seen}: "
    what += describe_devices(found)
    if not found.get("cuda_build"):
        raise GpuImageError(f"{what}; the image is a CPU build: use the GPU image, or --gpus 0")
    raise GpuMissingError(
        f"{what}; the node's NVIDIA driver or device plugin is not ready, so the Job retries "
        "the pod (exit 77)"
    )


def _host_port(value) -> bool:
    """`value` is host:port with a port number (every member is dialled there)."""
    if not isinstance(value, str):
        return False
    host, _, port = value.rpartition(":")
    try:
        bounded_int(port, "port", 1, 65535)
    except ValueError:  # '²' passes isdigit() and fails int(): ASCII digits only
        return False
    return bool(host)


def tf_config_from_env(env: Mapping[str, str] | None = None) -> dict | None:
    """The TF_CONFIG this process should use, or None for a single-process run.

    TF_CONFIG wins when set. Otherwise an Indexed Job provides IMDB_TRAIN_WORKER_HOSTS
    (comma-separated host:port, one per completion index) and JOB_COMPLETION_INDEX.
    """
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        raw = env["TF_CONFIG"]
        try:
            cfg = json.loads(raw)
            cluster, task = dict(cfg["cluster"]), dict(cfg["task"])
            members = cluster[task["type"]]
            index = task["index"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:  # nested past the parser
            raise DistributeError(
                f"invalid TF_CONFIG {raw[:200]!r}: expected "
                '{"cluster": {"worker": ["host:port", ...]}, '
                '"task": {"type": "worker", "index": N}}'
            ) from e
        if task["type"] not in TASK_TYPES or set(cluster) - set(TASK_TYPES):
            raise DistributeError(
                f"invalid TF_CONFIG {raw!r}: task and cluster types must be among "
                f"{', '.join(TASK_TYPES)} (MultiWorkerMirroredStrategy has no ps or evaluator)"
            )
        for name, hosts in cluster.items():
            if not isinstance(hosts, list) or not all(_host_port(h) for h in hosts):
                raise DistributeError(
                    f"invalid TF_CONFIG cluster {name!r}: {hosts!r}: expected a list of host:port"
                )
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(members):
            raise DistributeError(
                f"TF_CONFIG task index {index!r} is not a {task['type']} index: expected "
                f"0..{len(members) - 1}"
            )
        return cfg
    hosts = [h.strip() for h in env.get(WORKER_HOSTS_ENV, "").split(",") if h.strip()]
    if len(hosts) <= 1:
        return None
    if not all(_host_port(h) for h in hosts):
        raise DistributeError(
            f"invalid {WORKER_HOSTS_ENV} {env[WORKER_HOSTS_ENV]!r}: expected host:port,..."
        )
    index = bounded_int(
        env.get(COMPLETION_INDEX_ENV), COMPLETION_INDEX_ENV, 0, len(hosts) - 1, DistributeError
    )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def _seconds_from_env(name: str, env: Mapping[str, str] | None) -> float | None:
    env = os.environ if env is None else env
    raw = env.get(name, "").strip()
    if not raw:
        return None
    # Above 0 and at most a week: a deadline beyond that is no deadline.
    return bounded_float(raw, name, 0.001, 7 * 86_400, DistributeError)


def collective_timeout_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """IMDB_TRAIN_COLLECTIVE_TIMEOUT in seconds, or None (unset or empty: no timeout).

    Raises:
        DistributeError: not a positive number.
    """
    return _seconds_from_env(COLLECTIVE_TIMEOUT_ENV, env)


def peer_timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """IMDB_TRAIN_PEER_TIMEOUT in seconds (unset or empty: the contract's default).

    Raises:
        DistributeError: not a positive number.
    """
    seconds = _seconds_from_env(PEER_TIMEOUT_ENV, env)
    return float(PEER_TIMEOUT_DEFAULT) if seconds is None else seconds


def _split(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host.strip("[]"), int(port)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True


GREETING = b"imdb-train-peer"  # the start-up meeting's hello; TensorFlow's server never says it


def _member(kind: str, index: int) -> str:
    return f"{kind}/{index}"


def _greet(host_port: str, me: str, expected: str) -> bool:
    """Whether the peer at host_port is `expected`, in its meeting (not, say, the
    TensorFlow server of an earlier group still on that port); it records that we came."""
    try:
        with socket.create_connection(_split(host_port), timeout=2) as conn:
            conn.sendall(GREETING + b" " + me.encode() + b"\n")
            reply = conn.makefile("rb").readline(200)
    except (OSError, UnicodeError, ValueError):
        return False
    return reply.strip() == GREETING + b" " + expected.encode()


class _Meeting:
    """This worker's side of the start-up meeting, on its own port: answers each peer's
    greeting with its name and records who came, until closed (then TensorFlow binds it)."""

    def __init__(self, me: str, port: int) -> None:
        self.me = me
        self.came: set[str] = set()
        self.withdrawn = False
        self.lock = threading.Lock()
        if socket.has_dualstack_ipv6():
            self.sock = socket.create_server(
                ("", port), family=socket.AF_INET6, dualstack_ipv6=True
            )
        else:
            self.sock = socket.create_server(("", port))
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (sock := self.sock) is not None:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                hello = conn.makefile("rb").readline(200).split()
                if len(hello) != 2 or hello[0] != GREETING:
                    continue
                with self.lock:
                    if self.withdrawn:
                        continue
                    self.came.add(hello[1].decode(errors="replace"))
                conn.sendall(GREETING + b" " + self.me.encode() + b"\n")
                # The peer closes first: the TIME_WAIT lands on its side, not on this port.
                conn.recv(1)

    def withdraw(self) -> bool:
        """Leave without anyone counting on us: True when no peer has come yet (and from
        now on none will be answered), False when some peer already counts on us."""
        with self.lock:
            self.withdrawn = not self.came
            return self.withdrawn

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
            # The kernel frees the port only once the accept() in flight has returned.
            self.thread.join()


def wait_for_peers(
    tf_config: dict, seconds: float, stopped=lambda: False, interval: float = 0.5
) -> list[str]:
    """Meet every peer of the group before TensorFlow forms it; return the peers missing
    after `seconds` (empty: the group met).

    TensorFlow, once asked to form the group, waits for missing peers for up to an hour
    without returning to Python or honouring SIGTERM; a peer whose pod stays Pending (no GPU
    node) would hold this worker's GPUs that long. So the group meets first, here: each
    worker listens on its own port, greets every peer there, and leaves once it has greeted
    them all and all have greeted it; so none leaves before the others have seen it.

    `stopped()` (a SIGTERM) ends the wait early only while no peer has greeted us yet: a
    peer that has may already have left for TensorFlow, counting on us. Otherwise we stay,
    and the stop is agreed by the whole group once it has formed (callbacks.GroupStop).

    Raises:
        OSError: this worker's port cannot be listened on.
    """
    task = tf_config["task"]
    me = _member(task["type"], int(task["index"]))
    others = {
        _member(kind, i): host
        for kind in TASK_TYPES
        for i, host in enumerate(tf_config["cluster"].get(kind, []))
        if _member(kind, i) != me
    }
    greeted: set[str] = set()
    meeting = _Meeting(me, _split(tf_config["cluster"][task["type"]][int(task["index"])])[1])
    try:
        deadline = time.monotonic() + seconds
        while True:
            greeted |= {m for m, host in others.items() if m not in greeted and _greet(host, me, m)}
            with meeting.lock:
                met = greeted == set(others) and meeting.came >= set(others)
            if met or time.monotonic() >= deadline or (stopped() and meeting.withdraw()):
                break
            time.sleep(interval)
    finally:
        meeting.close()
    if met:
        return []
    return [host for m, host in others.items() if m not in greeted or m not in meeting.came]


def group_not_formed(missing: list[str], seconds: float) -> str:
    """Why the group did not form, naming each missing peer."""
    unresolved = [p for p in missing if not _resolves(_split(p)[0])]
    silent = [p for p in missing if p not in unresolved]
    parts = []
    if unresolved:
        parts.append(f"not resolvable, so not running yet: {', '.join(unresolved)}")
    if silent:
        parts.append(f"not meeting on their port: {', '.join(silent)}")
    return (
        f"the worker group did not form within {seconds:g} s ({PEER_TIMEOUT_ENV}); peers "
        + "; ".join(parts)
    )


def peer_failure(error: BaseException) -> str | None:
    """A one-line reason if `error` is a collective that failed because a peer worker died,
    stalled past the collective timeout or was cut off; otherwise None."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    kinds = (
        tf.errors.UnavailableError,  # peer gone: connection reset, missed heartbeats
        tf.errors.DeadlineExceededError,  # peer alive but stuck: the collective timeout
        tf.errors.AbortedError,
        tf.errors.CancelledError,
    )
    if not isinstance(error, kinds):
        return None
    # TF prefixes the reason with the Python stack that built the op: keep the reason.
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(getattr(error, "message", error)))
    lines = [ln.strip() for ln in message.splitlines()]
    reason = [
        ln
        for ln in lines
        if ln
        and not ln.startswith(("File ", "Detected at node", "Graph execution error"))
        and not ln.startswith("The error could be from a previous operation")
    ]
    return f"{type(error).__name__}: {' '.join(reason[:3]) or 'collective failed'}"


def group_size(tf_config: dict | None) -> int:
    """Processes in the training group (chief and workers; 1 without TF_CONFIG)."""
    if not tf_config:
        return 1
    return sum(len(tf_config["cluster"].get(t, [])) for t in TASK_TYPES)


def is_multi_worker(env: Mapping[str, str] | None = None) -> bool:
    return group_size(tf_config_from_env(env)) > 1


def is_chief(env: Mapping[str, str] | None = None) -> bool:
    """Worker 0 is the chief (no separate chief task): it alone writes shared artifacts."""
    cfg = tf_config_from_env(env)
    if not cfg:
        return True
    task = cfg["task"]
    return task.get("type") == "chief" or (
        task.get("type") == "worker" and int(task["index"]) == 0 and "chief" not in cfg["cluster"]
    )


def split_cpu(n: int) -> None:
    """Split the first CPU into n logical devices (must run before TF initialises)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )


def peers(tf_config: dict) -> list[str]:
    """host:port of every other member of the group."""
    task = tf_config["task"]
    return [
        host
        for kind in TASK_TYPES
        for i, host in enumerate(tf_config["cluster"].get(kind, []))
        if (kind, i) != (task["type"], int(task["index"]))
    ]


def make_strategy(cpu_devices: int = 0, collective_timeout: float | None = None):
    """Pick the strategy for this process.

    Args:
        cpu_devices: when no GPU is visible and > 1, mirror over that many logical CPUs.
        collective_timeout: multi-worker only: seconds after which a collective whose peer
            has gone away fails instead of hanging; None: IMDB_TRAIN_COLLECTIVE_TIMEOUT.
    """
    import tensorflow as tf

    # A GPU pod whose node lost its driver would otherwise train on the CPU, silently.
    check_gpus(devices())
    tf_config = tf_config_from_env()
    if group_size(tf_config) > 1:
        if collective_timeout is None:
            collective_timeout = collective_timeout_from_env()
        os.environ["TF_CONFIG"] = json.dumps(tf_config)
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    if cpu_devices > 1:
        split_cpu(cpu_devices)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_devices)])
    # One CPU: still MirroredStrategy, so every run takes the same code path (and the
    # same random streams) as on GPUs; the default strategy measured no faster here
    # (BENCHMARKS.md) and changes the seed-113 training trajectory.
    return tf.distribute.MirroredStrategy(["/cpu:0"])


def form_group(termination, cpu_devices: int, run_id: str):
    """This process's strategy, once its worker group (if any) has formed.

    A member of a group waits for every peer first (`wait_for_peers`), so a group whose
    peer stays Pending stops resumable instead of holding its GPUs; from then on a signal
    only raises this worker's flag, and the group agrees to stop (trainer.callbacks).

    Args:
        termination: the run's trainer.termination.Termination.
        cpu_devices: `make_strategy`'s.
        run_id: named in the messages (rerun with the same id to resume).

    Raises:
        PreemptedError: signalled while the group formed.
        RetryableError: the group did not form in time, or the worker port is taken.
    """
    from trainer import quiet
    from trainer.termination import PreemptedError

    tf_config = tf_config_from_env()
    if group_size(tf_config) > 1:
        termination.group = True
        seconds = peer_timeout_from_env()
        try:
            missing = wait_for_peers(tf_config, seconds, stopped=lambda: termination.requested)
        except OSError as e:
            raise RetryableError(f"cannot meet the worker group on this worker's port: {e}") from e
        if missing and termination.requested:
            raise PreemptedError(
                f"stopped by signal {termination.signum} while the worker group formed; "
                f"rerun with --run-id {run_id}"
            )
        if missing:
            raise GroupNotFormedError(
                f"{group_not_formed(missing, seconds)}; the Job retries the group, or rerun "
                f"all workers with --run-id {run_id}"
            )
    with quiet.unless_verbose():  # cuInit and device lines on CPU-only machines
        return make_strategy(cpu_devices)
