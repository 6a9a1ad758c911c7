"""Pure translation from our JobSpec to the trainer's Kubernetes objects: its labels, container,
pod template, the Job (a V1JobSpec around the pod) and a worker group's Service; no I/O.
What a submission creates of them: jobs.objects; the chart's objects: jobs.chart_objects."""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client

from jobs.names import (
    APP_NAME,
    CACHE_DIR,
    COLLECTIVE_TIMEOUT,
    CONTAINER_NAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_JOB_NAME,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_NAME,
    LABEL_PRIORITY_CLASS,
    LABEL_QUEUE,
    LABEL_RUN_ID,
    LABEL_VERSION,
    MANAGED_BY,
    SCHEDULED_TOLERANCE,
    TMP_DIR,
    UID,
)
from jobs.spec import VERSION, JobSpec
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


def base_labels(name: str, component: str) -> dict[str, str]:
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


def exit_code_rule(action: str, *codes: int) -> client.V1PodFailurePolicyRule:
    return client.V1PodFailurePolicyRule(
        action=action,
        on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER_NAME, operator="In", values=list(codes)
        ),
    )


def disruption_rule(action: str) -> client.V1PodFailurePolicyRule:
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
            disruption_rule("Ignore"),
            # A worker stopped because a peer was preempted: the preemption is not counted,
            # and neither is its consequence (activeDeadlineSeconds bounds the retries).
            exit_code_rule("Ignore", EXIT_GROUP_STOPPED),
            # A group that never formed (a peer Pending for a GPU node) trained nothing: not
            # counted; activeDeadlineSeconds bounds the waits.
            exit_code_rule("Ignore", EXIT_GROUP_NOT_FORMED),
            # Exit 2 = bad input, 3 = diverged: the same pod would fail the same way again.
            exit_code_rule("FailJob", *PERMANENT_EXITS),
            # Exit 77: the node has not the GPUs the pod asked for (driver, device plugin):
            # another pod, maybe on another node, may train; counted against backoffLimit.
            exit_code_rule("Count", EXIT_NO_GPU),
        ]
    )


def group_backoff_limit(spec: JobSpec) -> int:
    """The Job's backoffLimit: spec.backoff_limit retries of the whole group of workers."""
    return spec.backoff_limit * spec.workers


def build_v1_job_spec(spec: JobSpec, *, scheduled: bool = False) -> client.V1JobSpec:
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
        spec=build_v1_job_spec(spec),
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


def to_dict(obj: Any) -> dict[str, Any]:
    """The object as the API server would receive it (camelCase keys, no nulls)."""
    # An ApiClient only builds a connection pool object here; nothing is sent.
    return client.ApiClient().sanitize_for_serialization(obj)


def to_yaml(objs: list[Any]) -> str:
    """Multi-document YAML of Kubernetes objects, keys in API order."""
    return yaml.safe_dump_all([to_dict(o) for o in objs], sort_keys=False, default_flow_style=False)
