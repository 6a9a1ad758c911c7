"""The only module that talks to the Kubernetes API server; every failure says what to do."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from jobs.manifest import (
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
from trainer import contract
from trainer.errors import KnownError

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "default"
# Every object is created with strict field validation: the API server refuses a field it
# does not know (an older JobSet's, a typo) instead of dropping it and running without it.
FIELD_VALIDATION = "Strict"


PROGRESS_SECONDS = 10  # how often a waiting command looks at the pods


def _rv(version: str | None) -> int:
    return int(version) if version and version.isdigit() else 0


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ClusterError(KnownError):
    """An API call failed; the message names the object and the fix."""

    exit_code = contract.EXIT_FAILED


class ClusterNotFoundError(ClusterError):
    """The object named is not there (the API answered 404 NotFound for it)."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """How a finished Job ended."""

    name: str
    succeeded: bool
    reason: str
    message: str


class NotKubernetesError(ClusterError):
    """The server answered, but not as a Kubernetes API server does (a login proxy's HTML
    page, another service on the port): the command fails (exit 1), naming the server."""


def not_kubernetes(host: str, e: Exception, status: object, content_type: object) -> ClusterError:
    """The one line for an answer that is not a Kubernetes API object."""
    detail = " ".join(str(e).split())[:120]
    return NotKubernetesError(
        f"the server at {host} answered HTTP {status} "
        f"({content_type or 'no content type'}) with something that is not a Kubernetes "
        f"API object ({type(e).__name__}: {detail}); is it the cluster's API server, not "
        "a login proxy or another port? check your kubeconfig's server and --context"
    )


# What the client raises while reading an answer it cannot make objects of: pydantic's
# ValidationError is a ValueError; JSON and charset errors are too.
_UNREADABLE = (ValueError, TypeError, AttributeError, LookupError)


class CheckedApiClient(client.ApiClient):
    """The API client, whose answers that are not Kubernetes objects (HTML, text, JSON of
    another shape: the client's pydantic models refuse them) are one ClusterError naming
    the server, on every call, instead of a validation traceback."""

    def response_deserialize(self, response_data, response_types_map=None):
        try:
            return super().response_deserialize(response_data, response_types_map)
        except ApiException:
            raise
        except _UNREADABLE as e:
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
        except _UNREADABLE as e:
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


def pod_reason(pod: client.V1Pod) -> tuple[str, str]:
    """Why a pod is where it is: (reason, message), e.g. ImagePullBackOff or Unschedulable."""
    status = pod.status
    if status is None:
        return "", ""
    for cs in status.container_statuses or []:
        state = cs.state
        if state and state.waiting and state.waiting.reason:
            return state.waiting.reason, state.waiting.message or ""
        if state and state.terminated:
            code = state.terminated.exit_code
            return f"{state.terminated.reason or 'Terminated'} (exit {code})", ""
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.reason or "Unschedulable", cond.message or ""
    return "", ""


def pod_line(pod: client.V1Pod) -> str:
    """`NAME PHASE [REASON: message]` for progress and status output."""
    phase = (pod.status and pod.status.phase) or "Pending"
    if pod.metadata.deletion_timestamp:
        phase = "Terminating"
    reason, message = pod_reason(pod)
    text = f"{pod.metadata.name} {phase}"
    if reason:
        text += f" ({reason}{': ' + message if message else ''})"
    return text


def _status_details(e: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _translate(
    e: Exception, verb: str, resource: str, namespace: str, name: str | None = None, group: str = ""
) -> ClusterError:
    what = f"{resource.rstrip('s')} {name}" if name else resource
    if not isinstance(e, ApiException):
        return ClusterError(
            f"cannot {verb} {what} in namespace {namespace}: the API server is unreachable "
            f"({type(e).__name__}: {e}); check your kubeconfig context and network"
        )
    body = _status_details(e)
    details = body.get("details") or {}
    message = body.get("message") or e.reason or ""
    if e.status == 409 and verb == "create":
        return ClusterError(
            f"{what} already exists in namespace {namespace}; pass --run-id to start another run"
        )
    if e.status == 403:
        api_group = group or "core"
        return ClusterError(
            f"forbidden: cannot {verb} {what} in namespace {namespace}: your account needs the "
            f"RBAC verb {verb!r} on resource {resource!r} (API group {api_group!r}); apply "
            f"k8s/rbac.yaml and bind it to you ({message})"
        )
    if e.status == 404 and (details.get("kind") == "namespaces" or "namespaces" in message):
        return ClusterError(f"namespace {namespace} does not exist; create it or pass --namespace")
    if e.status == 404:
        return ClusterNotFoundError(f"{what} not found in namespace {namespace}")
    if e.status == 401:
        return ClusterError(
            f"cannot {verb} {what} in namespace {namespace}: the cluster rejected your "
            "credentials (expired token?); refresh your kubeconfig"
        )
    if e.status == 422:
        return ClusterError(
            f"the API server rejected {what} in namespace {namespace} as invalid: {message}"
        )
    return ClusterError(
        f"cannot {verb} {what} in namespace {namespace}: HTTP {e.status} {e.reason}: {message}"
    )


# Failures that a fresh attempt cannot fix: bad input (the exit-2 FailJob rule) and the deadline.
PERMANENT_REASONS = frozenset({"PodFailurePolicy", "DeadlineExceeded"})


def _outcome(name: str, conditions: list[dict[str, Any]], done: str) -> JobOutcome | None:
    """The first true terminal condition (`done`, the kind's success type, or Failed) as an
    outcome, or None while none is."""
    for cond in conditions:
        if cond.get("status") == "True" and cond.get("type") in (done, "Failed"):
            kind = cond["type"]
            return JobOutcome(name, kind == done, cond.get("reason") or kind,
                              cond.get("message") or "")  # fmt: skip
    return None


def job_outcome(job: client.V1Job) -> JobOutcome | None:
    """The Job's terminal condition, or None while it is still running."""
    conditions = [c.to_dict() for c in (job.status and job.status.conditions) or []]
    return _outcome(job.metadata.name, conditions, "Complete")


def jobset_outcome(jobset: dict[str, Any]) -> JobOutcome | None:
    """The JobSet's terminal condition (Completed or Failed), or None while it runs."""
    conditions = (jobset.get("status") or {}).get("conditions") or []
    return _outcome(jobset["metadata"]["name"], conditions, "Completed")


def owning_jobset(job: client.V1Job) -> str | None:
    """The JobSet a Job belongs to (its child Jobs are recreated if deleted alone)."""
    for ref in job.metadata.owner_references or []:
        if ref.kind == "JobSet":
            return ref.name
    return None


class Cluster:
    """Jobs, their pods and logs in one API server (client injected for tests)."""

    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _jobset_call(self, verb: str, namespace: str, name: str | None, fn, *args, **kwargs):
        try:
            return fn(JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, *args, **kwargs)
        except ApiException as e:
            # An unknown API group answers a plain 404 page, not a NotFound Status.
            if e.status == 404 and not (_status_details(e).get("details") or {}).get("kind"):
                raise ClusterError(
                    f"{verb} jobsets in namespace {namespace}: this cluster has no JobSet API "
                    f"({JOBSET_GROUP}); install JobSet (docs/kubernetes.md) or use --runtime job"
                ) from e
            message = str(_status_details(e).get("message") or "")
            newer = [f for f in JOBSET_NEWER_FIELDS if "unknown field" in message and f in message]
            if newer:
                raise ClusterError(
                    f"{verb} jobset {name} in namespace {namespace}: the installed JobSet is "
                    f"older than {JOBSET_MIN_RELEASE} (its API does not know {newer[0]}, which "
                    f"keeps bad input from restarting forever); upgrade JobSet to "
                    f"{JOBSET_MIN_RELEASE} or later, or use --runtime job ({message})"
                ) from e
            raise _translate(e, verb, JOBSET_PLURAL, namespace, name, JOBSET_GROUP) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _translate(e, verb, JOBSET_PLURAL, namespace, name, JOBSET_GROUP) from e

    def get_jobset(self, namespace: str, name: str) -> dict[str, Any]:
        return self._jobset_call("get", namespace, name, self.custom.get_namespaced_custom_object,
                                 name)  # fmt: skip

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

    def delete_jobset(self, namespace: str, name: str) -> None:
        """Delete a JobSet; its Jobs, pods and Service go with it."""
        self._jobset_call("delete", namespace, name,
                          self.custom.delete_namespaced_custom_object, name,
                          propagation_policy="Background")  # fmt: skip

    def wait_jobset(
        self,
        namespace: str,
        name: str,
        *,
        timeout: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> JobOutcome:
        """Poll a JobSet until it completes or fails, reporting its pods as they change.

        Raises:
            ClusterError: the JobSet vanished, the API failed, or `timeout` seconds passed.
        """
        progress = progress or _print_progress
        deadline = None if timeout is None else time.monotonic() + timeout
        last: list[str] = []
        while True:
            try:
                jobset = self.get_jobset(namespace, name)
            except ClusterNotFoundError as e:
                raise ClusterError(
                    f"jobset {name} in namespace {namespace} was deleted before it finished"
                ) from e
            outcome = jobset_outcome(jobset)
            if outcome:
                return outcome
            pods = self._call("list", "pods", namespace, None, self.core.list_namespaced_pod,
                              namespace, label_selector=f"{LABEL_JOBSET_NAME}={name}")  # fmt: skip
            lines = [pod_line(p) for p in sorted(pods.items, key=lambda p: p.metadata.name)]
            restarts = (jobset.get("status") or {}).get("restarts", 0)
            if lines != last:
                progress(
                    f"jobset {name} (restarts {restarts}): " + ("; ".join(lines) or "no pods yet")
                )
                last = lines
            if deadline is not None and time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {timeout:g}s waiting for jobset {name} in namespace "
                    f"{namespace}; it is still running (check with python -m jobs.status)"
                )
            time.sleep(min(2.0, PROGRESS_SECONDS))

    def _call(self, verb, resource, namespace, name, fn, *args, group="", **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise _translate(e, verb, resource, namespace, name, group) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _translate(e, verb, resource, namespace, name, group) from e

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
        jobs = [o for o in objs if isinstance(o, client.V1Job)]
        for job in jobs:
            ns, name = job.metadata.namespace, job.metadata.name
            if name in with_service and not job.spec.suspend:
                job = copy.deepcopy(job)
                job.spec.suspend = True
                to_resume.append(job)
            created.append(
                self._call(
                    "create",
                    "jobs",
                    ns,
                    name,
                    self.batch.create_namespaced_job,
                    ns,
                    job,
                    group="batch",
                    **options,
                )
            )
        owners = {j.metadata.name: j for j in created if isinstance(j, client.V1Job)}
        for svc in services:
            ns, name = svc.metadata.namespace, svc.metadata.name
            owner = owners.get(svc.spec.selector.get(LABEL_JOB_NAME, ""))
            if owner is not None:
                # Deleting the Job (cancel, TTL) then garbage-collects the Service.
                svc = copy.deepcopy(svc)
                svc.metadata.owner_references = [
                    client.V1OwnerReference(
                        api_version="batch/v1",
                        kind="Job",
                        name=owner.metadata.name,
                        uid=owner.metadata.uid,
                    )
                ]
            try:
                created.append(
                    self._call(
                        "create",
                        "services",
                        ns,
                        name,
                        self.core.create_namespaced_service,
                        ns,
                        svc,
                        **options,
                    )  # fmt: skip
                )
            except ClusterError as e:
                if owner is not None and not dry_run:
                    # Workers without their Service can never find each other: no orphan Job.
                    self.delete_job(ns, owner.metadata.name)
                    raise ClusterError(f"{e}; deleted job {owner.metadata.name} again") from e
                raise
        for job in [] if dry_run else to_resume:
            ns, name = job.metadata.namespace, job.metadata.name
            self._call(
                "patch",
                "jobs",
                ns,
                name,
                self.batch.patch_namespaced_job,
                name,
                ns,
                {"spec": {"suspend": False}},
                group="batch",
            )
        return created

    def get_job(self, namespace: str, name: str) -> client.V1Job:
        return self._call(
            "get",
            "jobs",
            namespace,
            name,
            self.batch.read_namespaced_job,
            name,
            namespace,
            group="batch",
        )

    def list_jobs(self, namespace: str, selector: str = "") -> list[client.V1Job]:
        result = self._call(
            "list",
            "jobs",
            namespace,
            None,
            self.batch.list_namespaced_job,
            namespace,
            label_selector=selector or None,
            group="batch",
        )
        return list(result.items)

    def delete_job(self, namespace: str, name: str, *, propagation: str = "Background") -> None:
        """Delete a Job; Background propagation removes its pods (and Service) too.

        Foreground keeps the Job until its pods are gone: used before re-creating it, so that
        no old worker is still writing a checkpoint when the new ones start.
        """
        self._call(
            "delete",
            "jobs",
            namespace,
            name,
            self.batch.delete_namespaced_job,
            name,
            namespace,
            propagation_policy=propagation,
            group="batch",
        )

    def _watch(
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
            yield from w.stream(
                list_fn,
                namespace,
                resource_version=resource_version,
                timeout_seconds=max(1, int(seconds)),
                **selectors,
            )
        except ApiException as e:
            if e.status != 410:
                raise _translate(e, "watch", resource, namespace, name, group) from e
        except _UNREADABLE as e:  # an event line that is not JSON
            host = self.api_client.configuration.host
            raise not_kubernetes(host, e, 200, "a watch stream") from e
        finally:
            w.stop()

    def _watch_job(self, job: client.V1Job, seconds: float) -> Iterator[dict[str, Any]]:
        """One bounded watch of this Job, from the version just read."""
        name, namespace = job.metadata.name, job.metadata.namespace
        return self._watch(
            self.batch.list_namespaced_job,
            namespace,
            "jobs",
            name,
            resource_version=job.metadata.resource_version,
            seconds=seconds,
            group="batch",
            field_selector=f"metadata.name={name}",
        )

    def wait_deleted(self, namespace: str, name: str, timeout: float = 300) -> None:
        """Block until the Job object is gone (watched, like wait_job)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                job = self.batch.read_namespaced_job(name, namespace)
            except ApiException as e:
                if e.status == 404:
                    return
                raise _translate(e, "get", "jobs", namespace, name, "batch") from e
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(
                    f"job {name} in namespace {namespace} is still being deleted after "
                    f"{timeout:g}s; check its pods with kubectl get pods -n {namespace}"
                )
            for event in self._watch_job(job, min(remaining, PROGRESS_SECONDS)):
                if event["type"] == "DELETED":
                    return

    def job_pods(self, namespace: str, job_name: str) -> list[client.V1Pod]:
        return self._job_pods(namespace, job_name)[0]

    def _job_pods(self, namespace: str, job_name: str) -> tuple[list[client.V1Pod], str | None]:
        """The Job's pods, oldest first, and the list's resource version (to watch from)."""
        result = self._call(
            "list",
            "pods",
            namespace,
            None,
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"{LABEL_JOB_NAME}={job_name}",
        )
        pods = sorted(
            result.items, key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name)
        )
        return pods, result.metadata.resource_version if result.metadata else None

    def wait_job(
        self,
        namespace: str,
        name: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[client.V1Job], None] | None = None,
        watch_seconds: int = 300,
        progress: Callable[[str], None] | None = None,
    ) -> JobOutcome:
        """Watch a Job until it completes or fails, reporting its pods' states as they change.

        Args:
            progress: called with a line whenever a pod's phase or waiting reason changes
                (default: print to stderr); pods are looked at every few seconds.

        Raises:
            ClusterError: the Job vanished, the API failed, or `timeout` seconds passed.
        """
        progress = progress or _print_progress
        deadline = None if timeout is None else time.monotonic() + timeout
        last: list[str] = []
        while True:
            job = self.get_job(namespace, name)
            outcome = job_outcome(job)
            if outcome:
                return outcome
            if on_change:
                on_change(job)
            last = self._report_pods(namespace, name, last, progress)
            # Pods change without the Job changing (ContainerCreating -> ImagePullBackOff).
            watch_seconds = min(watch_seconds, PROGRESS_SECONDS)
            remaining = watch_seconds if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(
                    f"timed out after {timeout:g}s waiting for job {name} in namespace "
                    f"{namespace}; it is still running (check with python -m jobs.status)"
                )
            # A bounded watch from the version just read: no event is missed, and a stale
            # version (410 Gone) only costs a fresh get.
            for event in self._watch_job(job, min(remaining, watch_seconds)):
                obj = event["object"]
                if event["type"] == "DELETED":
                    raise ClusterError(
                        f"job {name} in namespace {namespace} was deleted before it finished"
                    )
                outcome = job_outcome(obj)
                if outcome:
                    return outcome
                if on_change:
                    on_change(obj)
                last = self._report_pods(namespace, name, last, progress)

    def _report_pods(
        self, namespace: str, job_name: str, last: list[str], progress: Callable[[str], None]
    ) -> list[str]:
        lines = [pod_line(p) for p in self.job_pods(namespace, job_name)]
        if lines != last:
            progress(f"job {job_name}: " + ("; ".join(lines) or "no pods yet"))
        return lines

    def wait_pod_started(
        self,
        namespace: str,
        job_name: str,
        timeout: float | None = None,
        *,
        worker: int | None = None,
        progress: Callable[[str], None] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> str:
        """The pod to stream logs from, once its container runs (or ended).

        Worker `worker` of an Indexed Job (default 0, the chief), else the newest pod. Waits as
        long as the Job is active (a GPU node scale-up plus a large image pull can take long),
        or `timeout` seconds when given, reporting pod states as they change. Pods named in
        `skip` (already followed) are passed over.

        Raises:
            ClusterError: the Job finished without such a pod, or `timeout` passed.
        """
        progress = progress or _print_progress
        deadline = None if timeout is None else time.monotonic() + timeout
        last: list[str] = []
        while True:
            job = self.get_job(namespace, job_name)
            indexed = job.spec.completion_mode == "Indexed"
            pods, version = self._job_pods(namespace, job_name)
            if indexed or worker is not None:
                want = str(worker or 0)
                pods = [
                    p for p in pods if (p.metadata.annotations or {}).get(INDEX_ANNOTATION) == want
                ]
            pods = [p for p in pods if p.metadata.name not in skip]
            pod = pods[-1] if pods else None
            if pod and pod.status and pod.status.phase in ("Running", "Succeeded", "Failed"):
                return pod.metadata.name
            outcome = job_outcome(job)
            if outcome:
                raise ClusterError(
                    f"job {job_name} in namespace {namespace} "
                    f"{'succeeded' if outcome.succeeded else 'failed'} without a pod to follow "
                    f"({outcome.reason}: {outcome.message})"
                )
            last = self._report_pods(namespace, job_name, last, progress)
            remaining = PROGRESS_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(
                    f"no running pod for job {job_name} in namespace {namespace} after "
                    f"{timeout:g}s; check `python -m jobs.status -n {namespace}`"
                )
            # Wake on the first change to the Job's pods (or after a while, to look again).
            for _ in self._watch(
                self.core.list_namespaced_pod,
                namespace,
                "pods",
                job_name,
                resource_version=version,
                seconds=min(remaining, PROGRESS_SECONDS),
                label_selector=f"{LABEL_JOB_NAME}={job_name}",
            ):
                break

    def follow_job(
        self,
        namespace: str,
        job_name: str,
        *,
        worker: int | None = None,
        timeout: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Iterator[str]:
        """The trainer's log across the Job's pod retries, until the Job is no longer active."""
        seen: set[str] = set()
        while True:
            try:
                pod = self.wait_pod_started(
                    namespace, job_name, timeout, worker=worker, progress=progress,
                    skip=frozenset(seen),
                )  # fmt: skip
            except ClusterError:
                if seen:  # the Job ended after the pods we followed
                    return
                raise
            seen.add(pod)
            yield from self.stream_log(namespace, pod, follow=True)

    def admission(self, job: client.V1Job) -> str:
        """Why Kueue has not admitted a suspended Job, in Kueue's words: its Workload's
        QuotaReserved (or Admitted) condition; or why that cannot be known."""
        custom = client.CustomObjectsApi(self.batch.api_client)
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
        except (urllib3.exceptions.HTTPError, OSError) as e:
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
        resp = self._call(
            "get",
            "pods/log",
            namespace,
            pod,
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=CONTAINER_NAME,
            follow=follow,
            tail_lines=tail_lines,
            _preload_content=False,
        )
        try:
            yield from watch.watch.iter_resp_lines(resp)
        finally:
            resp.close()
            resp.release_conn()
