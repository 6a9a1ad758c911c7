"""What one submission creates, from its spec: [Service,] Job, or a worker group as a JobSet
(its Job the trainer's, from jobs.manifest; its failure policy tells bad input, preemption
and a broken node apart). A value the Kubernetes client's models refuse is one line naming
the flag that set it."""

from __future__ import annotations

from typing import Any

from jobs.manifest import (
    build_job,
    build_service,
    build_v1_job_spec,
    disruption_rule,
    exit_code_rule,
    labels,
    queue_labels,
    to_dict,
)
from jobs.names import JOBSET_GROUP, JOBSET_VERSION
from jobs.spec import JOBSET_REPLICATED_JOB, RUNTIME_JOBSET, JobSpec, SpecError
from trainer.contract import EXIT_GROUP_NOT_FORMED, EXIT_GROUP_STOPPED, PERMANENT_EXITS

# How the Job controller words a podFailurePolicy FailJob (pkg/controller/job/
# pod_failure_policy.go); a JobSet's failure policy tells the causes apart by these messages.
_FAILJOB_BY_CONDITION = "has condition {} matching FailJob rule"
_FAILJOB_BY_EXIT_CODE = "failed with exit code {} matching FailJob rule"


def build_jobset_failure_policy(spec: JobSpec) -> dict[str, Any]:
    """The whole group restarts on any member's failure; preemption is free, bad input final.

    The child Job fails at once (backoffLimit 0, FailJob rules) and says why in its
    message; the JobSet then recreates every Job (BlockingRecreate: only after the old pods
    are gone, so no two workers share an index or a checkpoint), counting the restart
    against maxRestarts unless a member was preempted (DisruptionTarget), stopped because
    a peer was (exit 76), or the group never formed (exit 78).
    """
    return {
        "maxRestarts": spec.backoff_limit,
        "restartStrategy": "BlockingRecreate",
        "rules": [
            {
                "name": "preempted",
                "action": "RestartJobSetAndIgnoreMaxRestarts",
                "onJobFailureReasons": ["PodFailurePolicy"],
                "onJobFailureMessagePatterns": [
                    _FAILJOB_BY_CONDITION.format("DisruptionTarget"),
                    _FAILJOB_BY_EXIT_CODE.format(EXIT_GROUP_STOPPED),
                    _FAILJOB_BY_EXIT_CODE.format(EXIT_GROUP_NOT_FORMED),
                ],
            },
            {
                "name": "badInput",
                "action": "FailJobSet",
                "onJobFailureReasons": ["PodFailurePolicy"],
                "onJobFailureMessagePatterns": [
                    _FAILJOB_BY_EXIT_CODE.format(code) for code in PERMANENT_EXITS
                ],
            },
            # The deadline bounds one attempt of the group; restarting would start it again.
            {
                "name": "deadline",
                "action": "FailJobSet",
                "onJobFailureReasons": ["DeadlineExceeded"],
            },
        ],
    }


def build_jobset(spec: JobSpec) -> dict[str, Any]:
    """A JobSet of one replicated Job: an Indexed Job of spec.workers pods that fails fast.

    The JobSet controller makes the headless Service (its name is the JobSet's) and restarts
    the whole group under build_jobset_failure_policy; Kueue admits the JobSet as one unit.
    """
    job = to_dict(build_v1_job_spec(spec))
    job["backoffLimit"] = 0  # any member's failure fails the Job; the JobSet restarts the group
    job.pop("ttlSecondsAfterFinished", None)  # the JobSet's TTL removes its Jobs
    job.pop("suspend", None)  # the JobSet is suspended for Kueue, not its Jobs
    job["completionMode"] = "Indexed"
    job["completions"] = job["parallelism"] = spec.workers
    job["podFailurePolicy"] = {"rules": [
        to_dict(disruption_rule("FailJob")),
        to_dict(exit_code_rule("FailJob", EXIT_GROUP_STOPPED)),
        to_dict(exit_code_rule("FailJob", EXIT_GROUP_NOT_FORMED)),
        to_dict(exit_code_rule("FailJob", *PERMANENT_EXITS)),
    ]}  # fmt: skip
    body: dict[str, Any] = {
        "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
        "kind": "JobSet",
        "metadata": {
            "name": spec.job_name,
            "namespace": spec.namespace,
            "labels": {**labels(spec), **queue_labels(spec)},
        },
        "spec": {
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "failurePolicy": build_jobset_failure_policy(spec),
            "replicatedJobs": [{
                "name": JOBSET_REPLICATED_JOB,
                "replicas": 1,
                "template": {"metadata": {"labels": labels(spec)}, "spec": job},
            }],
        },
    }  # fmt: skip
    if spec.queue:
        body["spec"]["suspend"] = True
    if spec.ttl_seconds_after_finished is not None:
        body["spec"]["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return body


# The flags behind the client models a value given on the command line reaches, for the
# line that names what was refused.
_MODEL_FLAGS = {
    "V1Toleration": "--tolerations",
    "V1ResourceRequirements": "--cpu, --memory, --gpus, --ephemeral-storage or their limits",
    "V1EmptyDirVolumeSource": "--tmp-size-limit, --cache-size-limit or --shm-size-limit",
    "V1ObjectMeta": "--name, --run-id, --pod-labels or --pod-annotations",
    "V1Container": "--image, --image-pull-policy or --extra-args",
    "V1PodSpec": "--node-selector, --service-account, --priority-class-name or "
    "--termination-grace-period-seconds",
    "V1JobSpec": "--backoff-limit, --active-deadline-seconds or --ttl-seconds-after-finished",
    "V1EnvVar": "--data, --output, --image or --peer-timeout",
    "V1LocalObjectReference": "--image-pull-secrets",
}


def invalid_field(e: ValueError) -> SpecError:
    """A value the Kubernetes client's models refuse (pydantic's ValidationError: a number
    where a string belongs) as one line naming the field, the value and the flag: bad
    input, exit 2, found before anything is sent or printed."""
    model = getattr(e, "title", "") or "a Kubernetes object"
    errors = e.errors() if callable(getattr(e, "errors", None)) else []
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ()))
    what = f"{model}.{field}" if field else model
    flag = _MODEL_FLAGS.get(model, "a submit flag")
    value = first.get("input", "?")
    reason = first.get("msg") or " ".join(str(e).split())[:120]
    return SpecError(f"invalid value {value!r} for {what} (set by {flag}): {reason}")


def build_objects(spec: JobSpec) -> list[Any]:
    """What one submission creates: [Service,] Job, or a JobSet (which makes its Service).

    Raises:
        SpecError: a value the Kubernetes client refuses (invalid_field).
    """
    try:
        if spec.runtime == RUNTIME_JOBSET:
            return [build_jobset(spec)]
        return [build_service(spec), build_job(spec)] if spec.workers > 1 else [build_job(spec)]
    except ValueError as e:  # pydantic's ValidationError (a ValueError) from a model
        if isinstance(e, SpecError):
            raise
        raise invalid_field(e) from e
