"""What a run cost, in metrics.json: pod-seconds by phase, GPU-seconds, the node it ran on."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence

from trainer import contract, distribute, phases
from trainer.storage import Store


def run_cost(marks: Mapping[str, float], env: Mapping[str, str] | None = None) -> dict:
    """The cost of this process's part of the run, for every pod of its group alike.

    Pod-seconds of a phase are its wall-clock seconds times the group's pods (a worker group
    waits for its slowest member, so every pod pays each phase); GPU-seconds are the
    pod-seconds times the GPUs each pod asked for (IMDB_TRAIN_GPUS), whether or not
    TensorFlow used them. The node is what the Job set (jobs/manifest.py): its name from
    the downward API, its GPU type and Spot from the node selector the pod was scheduled by.
    A resumed run counts its last process only (trainer.phases).
    """
    env = os.environ if env is None else env
    pods = distribute.group_size(distribute.tf_config_from_env(env))
    gpus = distribute.gpus_requested(env)
    done = [p for p in phases.ORDER if p in marks]
    by_phase = {
        later: round((marks[later] - marks[earlier]) * pods, 3)
        for earlier, later in zip(done, done[1:], strict=False)
    }
    pod_seconds = round(sum(by_phase.values()), 3)
    return {
        "pods": pods,
        "pod_seconds": pod_seconds,
        "pod_seconds_by_phase": by_phase,  # each phase named by its end (trainer.phases)
        "gpus_per_pod": gpus,
        "gpu_seconds": round(pod_seconds * gpus, 3),
        "node": env.get(contract.NODE_NAME_ENV) or None,
        "accelerator": env.get(contract.NODE_ACCELERATOR_ENV) or None,
        "spot": env.get(contract.NODE_SPOT_ENV) == "true",
    }


def record_attempt(store: Store, resumed_epochs: int) -> None:
    """Note this process in the run's store as its training starts (after the restore):
    when it started, when training began and from which epoch (0: from scratch)."""
    doc = {
        "started": phases.marks["started"],
        "training_from": phases.marks.get("model_ready"),
        "resumed_epochs": resumed_epochs,
        "node": os.environ.get(contract.NODE_NAME_ENV) or None,
    }
    key = contract.attempt_key(doc["started"], socket.gethostname())
    store.write_bytes(key, (json.dumps(doc) + "\n").encode())


def restarts(store: Store, epoch_seconds: Sequence[float]) -> dict:
    """The run's restarts and the training they redid, from the attempts' records.

    An attempt cut short trained from its `training_from` until it died, which is before
    the next attempt started; of that time, the epochs the next attempt resumed past were
    kept (their epoch_seconds), the rest is redone. `redone_seconds` is so an upper bound:
    it also counts the stopped attempt's exit and the wait for its replacement to start.
    """
    docs = []
    for key in store.list(contract.ATTEMPTS_DIR + "/"):
        try:
            docs.append(json.loads(store.read_bytes(key)))
        except (ValueError, OSError):
            continue  # a record cut short by the kill it describes
    docs.sort(key=lambda d: d.get("started") or 0)
    redone = 0.0
    for this, after in zip(docs, docs[1:], strict=False):
        if this.get("training_from") is None:
            continue  # stopped before training began: nothing to redo
        resumed, next_resumed = int(this.get("resumed_epochs") or 0), int(after["resumed_epochs"])
        kept = sum(epoch_seconds[resumed:next_resumed])
        redone += max(0.0, float(after["started"]) - float(this["training_from"]) - kept)
    return {"restarts": max(0, len(docs) - 1), "redone_seconds": round(redone, 3)}
