"""Pure translation from JobSpec to Kubernetes objects (V1Job, V1CronJob, ...); no I/O."""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client

from jobs.spec import JOBSET_REPLICATED_JOB, RUNTIME_JOBSET, VERSION, JobSpec, SpecError
from trainer.contract import (
    CACHE_ENV,
    COLLECTIVE_TIMEOUT_ENV,
    EXIT_GROUP_NOT_FORMED,
    EXIT_GROUP_STOPPED,
    EXIT_NO_GPU,
    GPUS_ENV,
    IMAGE_REF_ENV,
    NODE_ACCELERATOR_ENV,
    NODE_NAME_ENV,
    NODE_SPOT_ENV,
    PEER_TIMEOUT_ENV,
    PERMANENT_EXITS,
    RUN_ID_ENV,
    SEED_FROM_RUN_ID,
    SPOT_LABEL,
    WORKER_HOSTS_ENV,
    WORKER_PORT,
    WORKER_PORT_NAME,
)

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MODEL = "imdb-train/model"
LABEL_RUN_ID = "imdb-train/run-id"
# Set by the Job controller on every pod it creates (Kubernetes >= 1.27).
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
# The annotation of an Indexed Job's pod that says its worker index (0: the chief).
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Kueue's LocalQueue label; Kueue admits such a Job by unsuspending it.
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
# Kueue's WorkloadPriorityClass of a queued Job (its order in the queue, and preemption).
LABEL_PRIORITY_CLASS = "kueue.x-k8s.io/priority-class"
# Set by the JobSet controller on its child Jobs and their pods.
LABEL_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"
# Kueue's API as jobs.status reads it and docs/kueue.yaml writes it (v1beta2: Kueue >= 0.15;
# v1beta1 is deprecated there).
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"

APP_NAME = "imdb-train"
MANAGED_BY = "imdb-train-submit"
CONTAINER_NAME = "trainer"
COLLECTIVE_TIMEOUT = "900"  # seconds; well above the slowest checkpoint upload

UID = 10001  # the image's non-root user (see Dockerfile)
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
# Scheduled runs promote only a model at least as good as the current latest (no slow drift).
SCHEDULED_TOLERANCE = "0"

SUBMITTER_RULES: list[tuple[str, str, list[str]]] = [
    # patch: a multi-worker Job is created suspended and resumed once its Service exists.
    ("batch", "jobs", ["create", "get", "list", "watch", "patch", "delete"]),
    ("", "pods", ["get", "list", "watch"]),
    ("", "pods/log", ["get"]),
    # jobs.status shows the latest events (FailedScheduling, image pull errors, ...).
    ("", "events", ["list"]),
    # Multi-worker runs come with a headless Service owned by the Job.
    ("", "services", ["create"]),
    # jobs.submit --runtime jobset: worker groups as JobSets (jobset.x-k8s.io), if installed.
    (JOBSET_GROUP, JOBSET_PLURAL, ["create", "get", "list", "watch", "delete"]),
    # jobs.status says why a queued Job is not admitted: its Kueue Workload's conditions.
    ("kueue.x-k8s.io", "workloads", ["get", "list"]),
]


def labels(spec: JobSpec, component: str = "trainer", *, run_id: bool = True) -> dict[str, str]:
    """The labels of every object made for one spec (selectors use a subset)."""
    out = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: spec.name,
        LABEL_COMPONENT: component,
        LABEL_VERSION: VERSION,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MODEL: spec.model,
    }
    if run_id:
        out[LABEL_RUN_ID] = spec.run_id
    return out


def selector(model: str | None = None, run_id: str | None = None) -> str:
    """Label selector for our Jobs, narrowed by model and run id."""
    parts = [f"{LABEL_NAME}={APP_NAME}"]
    if model:
        parts.append(f"{LABEL_MODEL}={model}")
    if run_id not in (None, ""):
        parts.append(f"{LABEL_RUN_ID}={run_id}")
    return ",".join(parts)


def _base_labels(name: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        LABEL_VERSION: VERSION,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def _env(spec: JobSpec, *, scheduled: bool) -> list[client.V1EnvVar]:
    env = [
        client.V1EnvVar(name="HOME", value=CACHE_DIR),
        client.V1EnvVar(name=CACHE_ENV, value=f"{CACHE_DIR}/imdb-train"),
        client.V1EnvVar(name="MPLCONFIGDIR", value=f"{TMP_DIR}/matplotlib"),
        # The image this pod runs, recorded in the run's config.json.
        client.V1EnvVar(name=IMAGE_REF_ENV, value=spec.image),
        # TensorFlow sizes its thread pools to the node's cores; under a CPU limit on a large
        # node that throttles it. The limit (rounded up) sizes them instead.
        client.V1EnvVar(
            name="TF_NUM_INTRAOP_THREADS",
            value_from=client.V1EnvVarSource(
                resource_field_ref=client.V1ResourceFieldSelector(
                    container_name=CONTAINER_NAME, resource="limits.cpu"
                )
            ),
        ),
        client.V1EnvVar(name="TF_NUM_INTEROP_THREADS", value="2"),
        # The GPUs this pod asked for: the trainer refuses to train on fewer (exit 77), as
        # TensorFlow would fall back to the CPU without a word. The downward API has no
        # extended resources, so the value is the request itself.
        client.V1EnvVar(name=GPUS_ENV, value=str(spec.gpus)),
        # Where it ran, for metrics.json's cost: the node, and what the pod selected of it
        # (node labels have no downward API; the selector is what the node has).
        client.V1EnvVar(
            name=NODE_NAME_ENV,
            value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="spec.nodeName")
            ),
        ),
        client.V1EnvVar(name=NODE_ACCELERATOR_ENV, value=spec.accelerator or ""),
        client.V1EnvVar(name=NODE_SPOT_ENV, value=str(_spot(spec)).lower()),
    ]
    if scheduled:
        # A CronJob's Jobs are named <cronjob>-<minute>; the name is the run id, stable across
        # the pod retries of one Job (so a retried pod resumes its own checkpoints).
        env.append(
            client.V1EnvVar(
                name=RUN_ID_ENV,
                value_from=client.V1EnvVarSource(
                    field_ref=client.V1ObjectFieldSelector(
                        field_path=f"metadata.labels['{LABEL_JOB_NAME}']"
                    )
                ),
            )
        )
    if spec.workers > 1:
        # With JOB_COMPLETION_INDEX (set by Kubernetes on Indexed Jobs) the trainer builds
        # TF_CONFIG.
        env.append(client.V1EnvVar(name=WORKER_HOSTS_ENV, value=",".join(spec.worker_hosts())))
        # A peer that is alive but stuck would otherwise hang the group until the Job's
        # deadline; dead peers are caught sooner by TensorFlow's own heartbeats.
        env.append(client.V1EnvVar(name=COLLECTIVE_TIMEOUT_ENV, value=COLLECTIVE_TIMEOUT))
        # A peer that never starts (Pending for want of a GPU node): the workers that did
        # start give up after this and exit 75, so a partial group does not hold its GPUs.
        env.append(client.V1EnvVar(name=PEER_TIMEOUT_ENV, value=str(spec.peer_timeout)))
    return env


def _spot(spec: JobSpec) -> bool:
    """The pod selects GKE Spot nodes (cloud.google.com/gke-spot=true)."""
    return str(spec.node_selector.get(SPOT_LABEL, "")).lower() == "true"


def _resources(spec: JobSpec) -> client.V1ResourceRequirements:
    requests = {
        k: v
        for k, v in (
            ("cpu", spec.cpu),
            ("memory", spec.memory),
            ("ephemeral-storage", spec.ephemeral_storage),
        )  # fmt: skip
        if v
    }
    limits: dict[str, str] = {
        k: v for k, v in (("cpu", spec.cpu_limit), ("memory", spec.memory_limit)) if v
    }
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return client.V1ResourceRequirements(requests=requests or None, limits=limits or None)


def container_security_context() -> client.V1SecurityContext:
    """Pod Security Standards "restricted", plus a read-only root filesystem."""
    return client.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=client.V1Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=UID,
        run_as_group=UID,
        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
    )


def build_container(spec: JobSpec, *, scheduled: bool = False) -> client.V1Container:
    """The trainer container; args follow the trainer CLI contract."""
    args = spec.trainer_args(run_id=f"$({RUN_ID_ENV})" if scheduled else None)
    if scheduled:  # before the user's extra args, which may override it
        at = len(args) - len(spec.extra_args)
        args[at:at] = ["--tolerance", SCHEDULED_TOLERANCE, "--seed", str(SEED_FROM_RUN_ID)]
    ports = (
        [client.V1ContainerPort(name=WORKER_PORT_NAME, container_port=WORKER_PORT)]
        if spec.workers > 1
        else None
    )
    return client.V1Container(
        name=CONTAINER_NAME,
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        args=args,
        env=_env(spec, scheduled=scheduled),
        ports=ports,
        resources=_resources(spec),
        security_context=container_security_context(),
        volume_mounts=[
            client.V1VolumeMount(name="tmp", mount_path=TMP_DIR),
            client.V1VolumeMount(name="cache", mount_path=CACHE_DIR),
            client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
    )


def _tolerations(spec: JobSpec) -> list[client.V1Toleration] | None:
    if not spec.tolerations:
        return None
    return [
        client.V1Toleration(
            key=t.get("key"),
            operator=t.get("operator"),
            value=t.get("value"),
            effect=t.get("effect"),
            toleration_seconds=t.get("tolerationSeconds"),
        )
        for t in spec.tolerations
    ]


def build_pod_spec(spec: JobSpec, *, scheduled: bool = False) -> client.V1PodSpec:
    return client.V1PodSpec(
        # The Job controller, not the kubelet, decides about retries (podFailurePolicy).
        restart_policy="Never",
        service_account_name=spec.service_account,
        # Workload Identity reaches GCP through the metadata server; no token in the pod.
        automount_service_account_token=False,
        # SIGTERM -> the trainer checkpoints and exits 75 before SIGKILL.
        termination_grace_period_seconds=spec.termination_grace_period_seconds,
        priority_class_name=spec.priority_class_name or None,
        image_pull_secrets=[client.V1LocalObjectReference(name=n) for n in spec.image_pull_secrets]
        or None,  # fmt: skip
        subdomain=spec.service_name if spec.workers > 1 else None,
        node_selector=spec.node_selector or None,
        tolerations=_tolerations(spec),
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=UID,
            run_as_group=UID,
            fs_group=UID,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[build_container(spec, scheduled=scheduled)],
        volumes=[
            client.V1Volume(
                name="tmp", empty_dir=client.V1EmptyDirVolumeSource(size_limit=spec.tmp_size_limit)
            ),
            client.V1Volume(
                name="cache",
                empty_dir=client.V1EmptyDirVolumeSource(size_limit=spec.cache_size_limit),
            ),
            client.V1Volume(
                name="dshm",
                empty_dir=client.V1EmptyDirVolumeSource(
                    medium="Memory", size_limit=spec.shm_size_limit
                ),
            ),
        ],
    )


def build_pod_template(spec: JobSpec, *, scheduled: bool = False) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(
            labels={**spec.pod_labels, **labels(spec, run_id=not scheduled)},
            annotations=spec.pod_annotations or None,
        ),
        spec=build_pod_spec(spec, scheduled=scheduled),
    )


def _exit_code_rule(action: str, *codes: int) -> client.V1PodFailurePolicyRule:
    return client.V1PodFailurePolicyRule(
        action=action,
        on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER_NAME, operator="In", values=list(codes)
        ),
    )


def _disruption_rule(action: str) -> client.V1PodFailurePolicyRule:
    """Preemption, node drain, eviction: the pod's DisruptionTarget condition."""
    return client.V1PodFailurePolicyRule(
        action=action,
        on_pod_conditions=[
            client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
        ],
    )


def build_pod_failure_policy() -> client.V1PodFailurePolicy:
    """Disruptions are free, bad input is final, everything else (incl. 75) is a retry."""
    return client.V1PodFailurePolicy(
        rules=[
            # Preemption, node drain, eviction: not the trainer's fault; do not count it.
            _disruption_rule("Ignore"),
            # A worker stopped because a peer was preempted: the preemption is not counted,
            # and neither is its consequence (activeDeadlineSeconds bounds the retries).
            _exit_code_rule("Ignore", EXIT_GROUP_STOPPED),
            # A group that never formed (a peer Pending for a GPU node) trained nothing: not
            # counted; activeDeadlineSeconds bounds the waits.
            _exit_code_rule("Ignore", EXIT_GROUP_NOT_FORMED),
            # Exit 2 = bad input, 3 = diverged: the same pod would fail the same way again.
            _exit_code_rule("FailJob", *PERMANENT_EXITS),
            # Exit 77: the node has not the GPUs the pod asked for (driver, device plugin):
            # another pod, maybe on another node, may train; counted against backoffLimit.
            _exit_code_rule("Count", EXIT_NO_GPU),
        ]
    )


def group_backoff_limit(spec: JobSpec) -> int:
    """The Job's backoffLimit: spec.backoff_limit retries of the whole group of workers."""
    return spec.backoff_limit * spec.workers


def build_job_spec(spec: JobSpec, *, scheduled: bool = False) -> client.V1JobSpec:
    indexed = spec.workers > 1
    return client.V1JobSpec(
        # A worker group is one synchronous all-reduce: when one member fails, the others
        # stop too (exit 75: the trainer agrees on stopping, or sees its peer gone), so the
        # Job controller replaces every pod and the new group resumes from the last
        # checkpoint. Each such round costs up to one failure per worker: the budget is
        # backoffLimit rounds. Preemptions (DisruptionTarget) are not counted.
        backoff_limit=group_backoff_limit(spec),
        completion_mode="Indexed" if indexed else None,
        completions=spec.workers if indexed else None,
        parallelism=spec.workers if indexed else None,
        pod_failure_policy=build_pod_failure_policy(),
        # Never two pods for one index: the old one may still be writing its checkpoint.
        pod_replacement_policy="Failed",
        active_deadline_seconds=spec.active_deadline_seconds,
        # Scheduled Jobs have no TTL: the CronJob's history limits keep the last few, so a
        # failed weekly run is still there when someone looks.
        ttl_seconds_after_finished=None if scheduled else spec.ttl_seconds_after_finished,
        # Kueue expects queued Jobs to be created suspended; it unsuspends them on admission.
        suspend=True if spec.queue else None,
        template=build_pod_template(spec, scheduled=scheduled),
    )


# The oldest JobSet whose API knows every field we render: failurePolicy.rules[]
# .onJobFailureMessagePatterns came in v0.10.0 (an older server, without strict field
# validation, drops it and restarts on bad input without bound).
JOBSET_MIN_RELEASE = "v0.10.0"
JOBSET_NEWER_FIELDS = ("onJobFailureMessagePatterns",)

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
    job = to_dict(build_job_spec(spec))
    job["backoffLimit"] = 0  # any member's failure fails the Job; the JobSet restarts the group
    job.pop("ttlSecondsAfterFinished", None)  # the JobSet's TTL removes its Jobs
    job.pop("suspend", None)  # the JobSet is suspended for Kueue, not its Jobs
    job["completionMode"] = "Indexed"
    job["completions"] = job["parallelism"] = spec.workers
    job["podFailurePolicy"] = {"rules": [
        to_dict(_disruption_rule("FailJob")),
        to_dict(_exit_code_rule("FailJob", EXIT_GROUP_STOPPED)),
        to_dict(_exit_code_rule("FailJob", EXIT_GROUP_NOT_FORMED)),
        to_dict(_exit_code_rule("FailJob", *PERMANENT_EXITS)),
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


def queue_labels(spec: JobSpec) -> dict[str, str]:
    """Kueue's labels on a queued Job (or JobSet, or a CronJob's job template)."""
    out = {LABEL_QUEUE: spec.queue} if spec.queue else {}
    if spec.kueue_priority_class:
        out[LABEL_PRIORITY_CLASS] = spec.kueue_priority_class
    return out


def build_job(spec: JobSpec) -> client.V1Job:
    """The trainer Job for one spec (Indexed, one pod per worker, when workers > 1)."""
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=spec.job_name,
            namespace=spec.namespace,
            labels={**labels(spec), **queue_labels(spec)},
        ),
        spec=build_job_spec(spec),
    )


def build_service(spec: JobSpec) -> client.V1Service:
    """The headless Service that gives each indexed worker pod a DNS name <job>-<i>.<svc>."""
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(
            name=spec.service_name, namespace=spec.namespace, labels=labels(spec)
        ),
        spec=client.V1ServiceSpec(
            cluster_ip="None",
            # Workers resolve each other while still starting, before any readiness.
            publish_not_ready_addresses=True,
            selector={LABEL_JOB_NAME: spec.job_name},
            ports=[
                client.V1ServicePort(
                    name=WORKER_PORT_NAME, port=WORKER_PORT, target_port=WORKER_PORT, protocol="TCP"
                )
            ],
        ),
    )


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


def cronjob_name(spec: JobSpec) -> str:
    return f"{spec.name}-retrain-{spec.model}"


def build_cronjob(
    spec: JobSpec,
    *,
    schedule: str = "0 3 * * 0",
    time_zone: str = "Etc/UTC",
    starting_deadline_seconds: int = 3600,
    successful_jobs_history_limit: int = 3,
    failed_jobs_history_limit: int = 3,
    suspend: bool = False,
) -> client.V1CronJob:
    """Scheduled retraining: one Job per tick, each with its own run id (its Job name).

    Raises:
        SpecError: workers > 1 (an Indexed group needs a per-run Service) or the name is too long.
    """
    if spec.workers > 1:
        raise SpecError(
            f"invalid workers {spec.workers} for a CronJob: expected 1 (multi-worker runs are "
            "submitted with jobs.submit)"
        )
    name = cronjob_name(spec)
    # The controller appends -<11 digits> to make Job names; those must stay within 63.
    if len(name) > 52:
        raise SpecError(f"invalid name {spec.name!r}: CronJob name {name!r} exceeds 52 characters")
    return client.V1CronJob(
        api_version="batch/v1",
        kind="CronJob",
        metadata=client.V1ObjectMeta(
            name=name, namespace=spec.namespace, labels=labels(spec, "retrain", run_id=False)
        ),
        spec=client.V1CronJobSpec(
            schedule=schedule,
            time_zone=time_zone,
            # A retrain still running when the next tick comes is not doubled up.
            # A run still going at the next tick is not doubled up (Forbid). With a Kueue
            # queue a Job may never be admitted (no LocalQueue, no Kueue) and, suspended, it
            # never reaches its deadline: Forbid would then skip every later tick. Replace
            # swaps it for the new tick's Job; an admitted run is over long before the next
            # tick, since activeDeadlineSeconds is far shorter than the schedule's period.
            concurrency_policy="Replace" if spec.queue else "Forbid",
            starting_deadline_seconds=starting_deadline_seconds,
            successful_jobs_history_limit=successful_jobs_history_limit,
            failed_jobs_history_limit=failed_jobs_history_limit,
            suspend=suspend,
            job_template=client.V1JobTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels={
                        **labels(spec, "retrain", run_id=False),
                        **queue_labels(spec),
                    }
                ),
                spec=build_job_spec(spec, scheduled=True),
            ),
        ),
    )


def build_service_account(
    name: str,
    namespace: str,
    *,
    instance: str,
    component: str,
    gcp_service_account: str = "",
) -> client.V1ServiceAccount:
    """A ServiceAccount; the trainer's maps to a GCP SA through Workload Identity (no keys)."""
    annotations = (
        {"iam.gke.io/gcp-service-account": gcp_service_account} if gcp_service_account else None
    )
    return client.V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=_base_labels(instance, component),
            annotations=annotations,
        ),
        # The trainer reaches GCP through Workload Identity and needs no token; the submitter
        # runs jobs.* in the cluster and does.
        automount_service_account_token=component != "trainer",
    )


def build_network_policy(
    name: str, namespace: str, *, instance: str, egress: bool = False
) -> client.V1NetworkPolicy:
    """Trainer pods may reach each other on the workers' port where a namespace denies
    traffic by default; only their ingress is isolated (egress too if asked, for namespaces
    that deny egress by default and allow DNS and Cloud Storage already)."""
    trainers = client.V1LabelSelector(
        match_labels={LABEL_NAME: APP_NAME, LABEL_COMPONENT: "trainer"}
    )
    peers = [client.V1NetworkPolicyPeer(pod_selector=trainers)]
    port = [client.V1NetworkPolicyPort(port=WORKER_PORT, protocol="TCP")]
    return client.V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=client.V1ObjectMeta(
            name=f"{name}-workers", namespace=namespace, labels=_base_labels(instance, "network")
        ),
        spec=client.V1NetworkPolicySpec(
            pod_selector=trainers,
            policy_types=["Ingress", "Egress"] if egress else ["Ingress"],
            ingress=[client.V1NetworkPolicyIngressRule(_from=peers, ports=port)],
            egress=[client.V1NetworkPolicyEgressRule(to=peers, ports=port)] if egress else None,
        ),
    )


def build_role(name: str, namespace: str, *, instance: str) -> client.V1Role:
    """Only what jobs.submit/status/logs/cancel need, in one namespace."""
    return client.V1Role(
        api_version="rbac.authorization.k8s.io/v1",
        kind="Role",
        metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels=_base_labels(instance, "submitter")
        ),
        rules=[
            client.V1PolicyRule(api_groups=[group], resources=[resource], verbs=verbs)
            for group, resource, verbs in SUBMITTER_RULES
        ],
    )


def build_role_binding(
    name: str, namespace: str, *, instance: str, service_account: str
) -> client.V1RoleBinding:
    return client.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels=_base_labels(instance, "submitter")
        ),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        subjects=[
            client.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)
        ],
    )


def to_dict(obj: Any) -> dict[str, Any]:
    """The object as the API server would receive it (camelCase keys, no nulls)."""
    # An ApiClient only builds a connection pool object here; nothing is sent.
    return client.ApiClient().sanitize_for_serialization(obj)


def to_yaml(objs: list[Any]) -> str:
    """Multi-document YAML of Kubernetes objects, keys in API order."""
    return yaml.safe_dump_all([to_dict(o) for o in objs], sort_keys=False, default_flow_style=False)
