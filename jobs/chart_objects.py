"""The long-lived objects the chart owns, built by the same code as jobs.submit's: the
scheduled-retraining CronJob, the ServiceAccounts, the NetworkPolicy and the submitter's RBAC.
`python -m jobs.render` writes them to k8s/; tests keep them equal to the chart's."""

from __future__ import annotations

from kubernetes import client

from jobs.manifest import base_labels, build_v1_job_spec, labels, queue_labels
from jobs.names import APP_NAME, JOBSET_GROUP, JOBSET_PLURAL, LABEL_COMPONENT, LABEL_NAME
from jobs.spec import JobSpec, SpecError
from trainer.contract import WORKER_PORT

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
                spec=build_v1_job_spec(spec, scheduled=True),
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
            labels=base_labels(instance, component),
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
            name=f"{name}-workers", namespace=namespace, labels=base_labels(instance, "network")
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
            name=name, namespace=namespace, labels=base_labels(instance, "submitter")
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
            name=name, namespace=namespace, labels=base_labels(instance, "submitter")
        ),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        subjects=[
            client.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)
        ],
    )
