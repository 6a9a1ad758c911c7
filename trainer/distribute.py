"""Distribution strategy factory: MirroredStrategy (GPUs, or N logical CPUs), or
MultiWorkerMirroredStrategy when TF_CONFIG (or an Indexed Job's environment) names workers."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

WORKER_PORT = 2222
# Set by the Indexed Job (jobs/manifest.py): every worker's host:port, index order.
WORKER_HOSTS_ENV = "IMDB_TRAIN_WORKER_HOSTS"


class DistributeError(ValueError):
    """The multi-worker environment is inconsistent."""


def tf_config_from_env(env: Mapping[str, str] | None = None) -> dict | None:
    """The TF_CONFIG this process should use, or None for a single-process run.

    TF_CONFIG wins when set. Otherwise an Indexed Job provides IMDB_TRAIN_WORKER_HOSTS
    (comma-separated host:port, one per completion index) and JOB_COMPLETION_INDEX.
    """
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        try:
            cfg = json.loads(env["TF_CONFIG"])
            workers = cfg["cluster"]["worker"]
            task = cfg["task"]
        except (ValueError, KeyError, TypeError) as e:
            raise DistributeError(
                f"invalid TF_CONFIG {env['TF_CONFIG']!r}: expected "
                '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}'
            ) from e
        if not 0 <= int(task.get("index", -1)) < len(workers):
            raise DistributeError(
                f"TF_CONFIG task index {task.get('index')!r} is outside 0..{len(workers) - 1}"
            )
        return cfg
    hosts = [h.strip() for h in env.get(WORKER_HOSTS_ENV, "").split(",") if h.strip()]
    if len(hosts) <= 1:
        return None
    index = env.get("JOB_COMPLETION_INDEX")
    if index is None or not index.isdigit() or int(index) >= len(hosts):
        raise DistributeError(
            f"JOB_COMPLETION_INDEX {index!r} is not a worker index: expected 0..{len(hosts) - 1}"
        )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": int(index)}}


def is_multi_worker(env: Mapping[str, str] | None = None) -> bool:
    cfg = tf_config_from_env(env)
    return bool(cfg) and len(cfg["cluster"].get("worker", [])) > 1


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


def make_strategy(cpu_devices: int = 0, collective_timeout: float | None = None):
    """Pick the strategy for this process.

    Args:
        cpu_devices: when no GPU is visible and > 1, mirror over that many logical CPUs.
        collective_timeout: multi-worker only: seconds after which a collective whose peer
            has gone away fails instead of hanging.
    """
    import tensorflow as tf

    tf_config = tf_config_from_env()
    if tf_config and len(tf_config["cluster"].get("worker", [])) > 1:
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
    return tf.distribute.MirroredStrategy(["/cpu:0"])
