"""The only module that talks to the Kubernetes API server: the client's set-up and the
calls, which return the API's objects (the commands print). Their failures: jobs.apierrors;
waiting for a Job or its pods to change: jobs.waits."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from jobs.apierrors import (
    UNREADABLE,
    ClusterError,
    ClusterNotFoundError,
    not_kubernetes,
    status_details,
    translate,
)
from jobs.names import (
    CONTAINER_NAME,
    JOBSET_GROUP,
    JOBSET_MIN_RELEASE,
    JOBSET_NEWER_FIELDS,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    KUEUE_GROUP,
    KUEUE_VERSION,
    LABEL_JOB_NAME,
    LABEL_JOBSET_NAME,
)
from jobs.spec import jobset_child_job

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "default"
# Every object is created with strict field validation: the API server refuses a field it
# does not know (an older JobSet's, a typo) instead of dropping it and running without it.
FIELD_VALIDATION = "Strict"
# Errors of the connection itself (refused, reset, DNS): the API server is unreachable.
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)


def _rv(version: str | None) -> int:
    return int(version) if version and version.isdigit() else 0


class CheckedApiClient(client.ApiClient):
    """The API client, whose answers that are not Kubernetes objects (HTML, text, JSON of
    another shape: the client's pydantic models refuse them) are one ClusterError naming
    the server, on every call, instead of a validation traceback."""

    def response_deserialize(self, response_data, response_types_map=None):
        try:
            return super().response_deserialize(response_data, response_types_map)
        except ApiException:
            raise
        except UNREADABLE as e:
            raise not_kubernetes(
                self.configuration.host,
                e,
                response_data.status,
                response_data.headers.get("content-type"),
            ) from e

    def deserialize(self, response_text, response_type, content_type=None):
        try:
            return super().deserialize(response_text, response_type, content_type)
        except ApiException:
            raise
        except UNREADABLE as e:
            raise not_kubernetes(self.configuration.host, e, 200, content_type) from e


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster config inside a pod, kubeconfig (KUBECONFIG, ~/.kube/config) elsewhere.

    Raises:
        ClusterError: no usable configuration was found.
    """
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
            return CheckedApiClient(configuration)
        except config.ConfigException as e:
            raise ClusterError(f"in-cluster Kubernetes configuration is unusable: {e}") from e
    # kubernetes.config reads KUBECONFIG once, at import; read it now instead.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        return CheckedApiClient(configuration)
    except (config.ConfigException, OSError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(
            f"no usable Kubernetes configuration in {where} ({str(e).strip()}); set KUBECONFIG, "
            "pass --kubeconfig, or run `gcloud container clusters get-credentials CLUSTER`"
        ) from e


def connect(
    namespace: str | None, kubeconfig: str | None = None, context: str | None = None
) -> tuple[Cluster, str]:
    """(the cluster, the namespace to use): the one set-up of the jobs.* commands, from
    --kubeconfig and --context (or the pod's own service account) and --namespace."""
    cluster = Cluster(load_api_client(kubeconfig, context))
    return cluster, resolve_namespace(namespace, kubeconfig, context)


def resolve_namespace(
    namespace: str | None, kubeconfig: str | None = None, context: str | None = None
) -> str:
    """The namespace given, else the kubeconfig context's (or the pod's, in a cluster), else
    `default`, as kubectl chooses it."""
    if namespace not in (None, ""):
        return str(namespace)
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return IN_CLUSTER_NAMESPACE.read_text().strip() or FALLBACK_NAMESPACE
        except OSError:
            return FALLBACK_NAMESPACE
    try:
        contexts, current = config.list_kube_config_contexts(
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None
        )
    except (config.ConfigException, OSError, TypeError):
        return FALLBACK_NAMESPACE  # load_api_client reports the unusable config
    chosen = next((c for c in contexts if c["name"] == context), None) if context else current
    return ((chosen or {}).get("context") or {}).get("namespace") or FALLBACK_NAMESPACE


def owning_jobset(job: client.V1Job) -> str | None:
    """The JobSet a Job belongs to (its child Jobs are recreated if deleted alone)."""
    for ref in job.metadata.owner_references or []:
        if ref.kind == "JobSet":
            return ref.name
    return None


def _jobset_error(e: ApiException, verb: str, namespace: str, name: str | None) -> ClusterError:
    """A failed JobSet call: no JobSet API, a JobSet too old for a field we set, or as any
    other call."""
    # An unknown API group answers a plain 404 page, not a NotFound Status.
    if e.status == 404 and not (status_details(e).get("details") or {}).get("kind"):
        return ClusterError(
            f"{verb} jobsets in namespace {namespace}: this cluster has no JobSet API "
            f"({JOBSET_GROUP}); install JobSet (docs/kubernetes.md) or use --runtime job"
        )
    message = str(status_details(e).get("message") or "")
    newer = [f for f in JOBSET_NEWER_FIELDS if "unknown field" in message and f in message]
    if newer:
        return ClusterError(
            f"{verb} jobset {name} in namespace {namespace}: the installed JobSet is "
            f"older than {JOBSET_MIN_RELEASE} (its API does not know {newer[0]}, which "
            f"keeps bad input from restarting forever); upgrade JobSet to "
            f"{JOBSET_MIN_RELEASE} or later, or use --runtime job ({message})"
        )
    return translate(e, verb, JOBSET_PLURAL, namespace, name, JOBSET_GROUP)


class Cluster:
    """Jobs, JobSets, their pods, logs and events in one API server (client injected for
    tests). Every call's failure is a ClusterError naming the object and the fix."""

    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _call(self, verb, resource, namespace, name, fn, *args, group="", **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ApiException, *_UNREACHABLE) as e:
            raise translate(e, verb, resource, namespace, name, group) from e

    def _job_call(self, verb: str, namespace: str, name: str | None, fn, *args, **kwargs):
        return self._call(verb, "jobs", namespace, name, fn, *args, group="batch", **kwargs)

    def _jobset_call(self, verb: str, namespace: str, name: str | None, fn, *args, **kwargs):
        try:
            return fn(JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, *args, **kwargs)
        except ApiException as e:
            raise _jobset_error(e, verb, namespace, name) from e
        except _UNREACHABLE as e:
            raise translate(e, verb, JOBSET_PLURAL, namespace, name, JOBSET_GROUP) from e

    def create(self, objs: list[Any], *, dry_run: bool = False) -> list[Any]:
        """Create Jobs and, for multi-worker runs, their headless Services (owned by the Job).

        Strict field validation on every create; `dry_run`: the server validates and admits
        each object (its webhooks included) and stores nothing.

        A Job with a Service is created suspended, so no worker starts before its peers' DNS
        names exist; it is resumed once the Service is there (unless Kueue admits it), and
        deleted again if the Service cannot be created. A Job that is already suspended (one
        for Kueue, which admits it by unsuspending) is left suspended.
        """
        options: dict[str, str] = {"field_validation": FIELD_VALIDATION}
        if dry_run:
            options["dry_run"] = "All"
        created: list[Any] = []
        for obj in objs:
            if isinstance(obj, dict) and obj.get("kind") == "JobSet":
                meta = obj["metadata"]
                created.append(self._jobset_call(
                    "create", meta["namespace"], meta["name"],
                    self.custom.create_namespaced_custom_object, obj, **options))  # fmt: skip
        services = [o for o in objs if isinstance(o, client.V1Service)]
        with_service = {s.spec.selector.get(LABEL_JOB_NAME, "") for s in services}
        to_resume: list[client.V1Job] = []
        for job in (o for o in objs if isinstance(o, client.V1Job)):
            ns, name = job.metadata.namespace, job.metadata.name
            if name in with_service and not job.spec.suspend:
                job = copy.deepcopy(job)
                job.spec.suspend = True
                to_resume.append(job)
            created.append(self._job_call("create", ns, name, self.batch.create_namespaced_job,
                                          ns, job, **options))  # fmt: skip
        owners = {j.metadata.name: j for j in created if isinstance(j, client.V1Job)}
        for svc in services:
            owner = owners.get(svc.spec.selector.get(LABEL_JOB_NAME, ""))
            created.append(self._create_service(svc, owner, options))
        for job in [] if dry_run else to_resume:
            ns, name = job.metadata.namespace, job.metadata.name
            self._job_call("patch", ns, name, self.batch.patch_namespaced_job, name, ns,
                           {"spec": {"suspend": False}})  # fmt: skip
        return created

    def _create_service(
        self, svc: client.V1Service, owner: client.V1Job | None, options: dict[str, str]
    ) -> client.V1Service:
        """Create a worker group's Service, owned by its Job: deleting the Job (cancel, TTL)
        then garbage-collects the Service. Workers without their Service can never find each
        other: when it cannot be created, the Job is deleted again (no orphan Job)."""
        ns, name = svc.metadata.namespace, svc.metadata.name
        if owner is not None:
            svc = copy.deepcopy(svc)
            svc.metadata.owner_references = [client.V1OwnerReference(
                api_version="batch/v1", kind="Job", name=owner.metadata.name,
                uid=owner.metadata.uid)]  # fmt: skip
        try:
            return self._call("create", "services", ns, name, self.core.create_namespaced_service,
                              ns, svc, **options)  # fmt: skip
        except ClusterError as e:
            if owner is not None and "dry_run" not in options:
                self.delete_job(ns, owner.metadata.name)
                raise ClusterError(f"{e}; deleted job {owner.metadata.name} again") from e
            raise

    def get_job(self, namespace: str, name: str) -> client.V1Job:
        return self._job_call("get", namespace, name, self.batch.read_namespaced_job, name,
                              namespace)  # fmt: skip

    def list_jobs(self, namespace: str, selector: str = "") -> list[client.V1Job]:
        result = self._job_call("list", namespace, None, self.batch.list_namespaced_job,
                                namespace, label_selector=selector or None)  # fmt: skip
        return list(result.items)

    def delete_job(self, namespace: str, name: str, *, propagation: str = "Background") -> None:
        """Delete a Job; Background propagation removes its pods (and Service) too.

        Foreground keeps the Job until its pods are gone: used before re-creating it, so that
        no old worker is still writing a checkpoint when the new ones start.
        """
        self._job_call("delete", namespace, name, self.batch.delete_namespaced_job, name,
                       namespace, propagation_policy=propagation)  # fmt: skip

    def job_or_none(self, namespace: str, name: str) -> client.V1Job | None:
        """The Job, or None when there is none (any 404, the namespace's too)."""
        try:
            return self.batch.read_namespaced_job(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise translate(e, "get", "jobs", namespace, name, "batch") from e

    def get_jobset(self, namespace: str, name: str) -> dict[str, Any]:
        return self._jobset_call("get", namespace, name, self.custom.get_namespaced_custom_object,
                                 name)  # fmt: skip

    def delete_jobset(self, namespace: str, name: str) -> None:
        """Delete a JobSet; its Jobs, pods and Service go with it."""
        self._jobset_call("delete", namespace, name,
                          self.custom.delete_namespaced_custom_object, name,
                          propagation_policy="Background")  # fmt: skip

    def find_run(self, namespace: str, name: str) -> tuple[str, str | None]:
        """(the Job whose pods run it, its JobSet or None) for a Job or a JobSet's name.

        Raises:
            ClusterNotFoundError: neither a Job nor a JobSet has that name (as the Job's).
        """
        try:
            return name, owning_jobset(self.get_job(namespace, name))
        except ClusterNotFoundError as missing:
            try:
                self.get_jobset(namespace, name)
            except ClusterError:
                raise missing from None
            return jobset_child_job(name), name

    def _pods(self, namespace: str, selector: str) -> client.V1PodList:
        return self._call("list", "pods", namespace, None, self.core.list_namespaced_pod,
                          namespace, label_selector=selector)  # fmt: skip

    def job_pods(self, namespace: str, job_name: str) -> list[client.V1Pod]:
        return self.job_pods_listed(namespace, job_name)[0]

    def job_pods_listed(
        self, namespace: str, job_name: str
    ) -> tuple[list[client.V1Pod], str | None]:
        """The Job's pods, oldest first, and the list's resource version (to watch from)."""
        result = self._pods(namespace, f"{LABEL_JOB_NAME}={job_name}")
        pods = sorted(
            result.items, key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name)
        )
        return pods, result.metadata.resource_version if result.metadata else None

    def jobset_pods(self, namespace: str, name: str) -> list[client.V1Pod]:
        """The JobSet's pods, by name."""
        pods = self._pods(namespace, f"{LABEL_JOBSET_NAME}={name}").items
        return sorted(pods, key=lambda p: p.metadata.name)

    def watch(
        self,
        list_fn: Callable[..., Any],
        namespace: str,
        resource: str,
        name: str,
        *,
        resource_version: str | None,
        seconds: float,
        group: str = "",
        **selectors: str,
    ) -> Iterator[dict[str, Any]]:
        """One bounded watch from `resource_version`: its events, until it times out.

        A stale version (410 Gone) ends it quietly: the caller reads the object again and
        watches from there. Any other API failure is translated like every other call.
        """
        w = watch.Watch()
        w._api_client = self.api_client  # its own is a default one: ours names the server
        try:
            yield from w.stream(list_fn, namespace, resource_version=resource_version,
                                timeout_seconds=max(1, int(seconds)), **selectors)  # fmt: skip
        except ApiException as e:
            if e.status != 410:
                raise translate(e, "watch", resource, namespace, name, group) from e
        except UNREADABLE as e:  # an event line that is not JSON
            host = self.api_client.configuration.host
            raise not_kubernetes(host, e, 200, "a watch stream") from e
        finally:
            w.stop()

    def watch_job(self, job: client.V1Job, seconds: float) -> Iterator[dict[str, Any]]:
        """One bounded watch of this Job, from the version just read."""
        name, namespace = job.metadata.name, job.metadata.namespace
        return self.watch(self.batch.list_namespaced_job, namespace, "jobs", name,
                          resource_version=job.metadata.resource_version, seconds=seconds,
                          group="batch", field_selector=f"metadata.name={name}")  # fmt: skip

    def watch_job_pods(
        self, namespace: str, job_name: str, version: str | None, seconds: float
    ) -> Iterator[dict[str, Any]]:
        """One bounded watch of a Job's pods, from the version of their list."""
        return self.watch(self.core.list_namespaced_pod, namespace, "pods", job_name,
                          resource_version=version, seconds=seconds,
                          label_selector=f"{LABEL_JOB_NAME}={job_name}")  # fmt: skip

    def job_events(self, namespace: str, names: list[str], limit: int = 8) -> list[Any]:
        """The latest events about these objects (a Job and its pods), oldest first: one
        field-selected list per object, not every event of the namespace."""
        events = []
        for name in dict.fromkeys(names):
            result = self._call(
                "list", "events", namespace, None, self.core.list_namespaced_event, namespace,
                field_selector=f"involvedObject.name={name}",
            )  # fmt: skip
            events += [e for e in result.items if e.involved_object.name == name]

        def when(e: Any) -> Any:
            return e.last_timestamp or e.event_time or e.metadata.creation_timestamp

        # Timestamps have one-second resolution; the resource version orders within a second.
        return sorted(
            events, key=lambda e: (when(e) is not None, when(e), _rv(e.metadata.resource_version))
        )[-limit:]

    def stream_log(
        self, namespace: str, pod: str, *, follow: bool = True, tail_lines: int | None = None
    ) -> Iterator[str]:
        """The trainer container's log, line by line (until the container ends, if following)."""
        resp = self._call("get", "pods/log", namespace, pod, self.core.read_namespaced_pod_log,
                          pod, namespace, container=CONTAINER_NAME, follow=follow,
                          tail_lines=tail_lines, _preload_content=False)  # fmt: skip
        try:
            yield from watch.watch.iter_resp_lines(resp)
        finally:
            resp.close()
            resp.release_conn()


def kueue_admission(cluster: Cluster, job: client.V1Job) -> str:
    """Why Kueue has not admitted a suspended Job, in Kueue's words: its Workload's
    QuotaReserved (or Admitted) condition; or why that cannot be known."""
    custom = cluster.custom
    namespace = job.metadata.namespace
    try:
        found = custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads",
            label_selector=f"kueue.x-k8s.io/job-uid={job.metadata.uid}",
        )  # fmt: skip
    except ApiException as e:
        if e.status == 404:
            return (f"no Kueue Workload API {KUEUE_GROUP}/{KUEUE_VERSION} in this cluster: "
                    "is Kueue >= 0.15 installed?")  # fmt: skip
        if e.status == 403:
            return "cannot read Kueue Workloads (the Role needs get/list workloads)"
        return f"cannot read Kueue Workloads ({e.status} {e.reason})"
    except _UNREACHABLE as e:
        return f"cannot read Kueue Workloads ({e})"
    items = found.get("items") or []
    if not items:
        queue = (job.metadata.labels or {}).get("kueue.x-k8s.io/queue-name", "")
        return (f"Kueue made no Workload for it (is Kueue running, and does it manage "
                f"the queue-name label {queue!r}?)")  # fmt: skip
    conditions = {c.get("type"): c for c in items[0].get("status", {}).get("conditions", [])}
    for kind in ("QuotaReserved", "Admitted"):
        cond = conditions.get(kind)
        if cond and cond.get("status") != "True":
            return f"{cond.get('reason', kind)}: {cond.get('message', '')}".strip(": ")
    return "waiting for Kueue"
