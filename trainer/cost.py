"""What a run cost, in metrics.json: pod-seconds by phase, GPU-seconds, the node it ran on."""

from __future__ import annotations

import os
from collections.abc import Mapping

from trainer import contract, distribute, phases


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
