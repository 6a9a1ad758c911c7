"""How a Job or JobSet ended, what its pods are doing, and waiting for either to change.

Every wait is `wait_until`: read the state, else wait for a change (a bounded watch from
the version just read, or a short sleep where nothing is watched), until `timeout`.
Progress lines go to the `progress` the command passes (it prints them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from kubernetes import client

from jobs.apierrors import ClusterError, ClusterNotFoundError
from jobs.names import INDEX_ANNOTATION

if TYPE_CHECKING:
    from jobs.kube import Cluster

T = TypeVar("T")
Progress = Callable[[str], None]

# The longest one watch lasts before a waiting command reads the Job and its pods again:
# pods change without their Job changing (ContainerCreating -> ImagePullBackOff).
WATCH_SECONDS = 10
# How often a JobSet is read while waiting for it: it is polled, not watched.
POLL_SECONDS = 2
# Failures that a fresh attempt cannot fix: bad input (the exit-2 FailJob rule) and the deadline.
PERMANENT_REASONS = frozenset({"PodFailurePolicy", "DeadlineExceeded"})


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """How a finished Job ended."""

    name: str
    succeeded: bool
    reason: str
    message: str


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


def wait_until(
    look: Callable[[], T | None],
    wake: Callable[[float], T | None],
    *,
    timeout: float | None,
    expired: str,
    period: float = WATCH_SECONDS,
) -> T:
    """The one wait loop. `look()` reads the state (and reports it): the result, or None
    while there is none; `wake(seconds)` waits at most that long for a change (a bounded
    watch, or a sleep): the result, if the change brought it, or None. Once `timeout`
    seconds passed (None: for as long as it takes), a ClusterError says `expired`, its
    `{timeout}` filled in."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = look()
        if found is not None:
            return found
        remaining = period if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise ClusterError(expired.format(timeout=f"{timeout:g}"))
        found = wake(min(remaining, period))
        if found is not None:
            return found


class _PodReport:
    """A progress line whenever the pods' lines change."""

    def __init__(self, progress: Progress):
        self.progress, self.last = progress, []  # no line for no pods before any was seen

    def __call__(self, head: str, pods: list[client.V1Pod]) -> None:
        lines = [pod_line(p) for p in pods]
        if lines != self.last:
            self.progress(f"{head}: " + ("; ".join(lines) or "no pods yet"))
        self.last = lines


def wait_job(
    cluster: Cluster, namespace: str, name: str, *, progress: Progress, timeout: float | None = None
) -> JobOutcome:
    """Watch a Job until it completes or fails, reporting its pods' states as they change
    (`progress` is called with a line; pods are looked at every few seconds).

    Raises:
        ClusterError: the Job vanished, the API failed, or `timeout` seconds passed.
    """
    report = _PodReport(progress)
    read: dict[str, client.V1Job] = {}

    def look() -> JobOutcome | None:
        read["job"] = job = cluster.get_job(namespace, name)
        outcome = job_outcome(job)
        if outcome is None:
            report(f"job {name}", cluster.job_pods(namespace, name))
        return outcome

    def wake(seconds: float) -> JobOutcome | None:
        # A bounded watch from the version just read: no event is missed, and a stale
        # version (410 Gone) only costs a fresh get.
        for event in cluster.watch_job(read["job"], seconds):
            if event["type"] == "DELETED":
                raise ClusterError(
                    f"job {name} in namespace {namespace} was deleted before it finished"
                )
            outcome = job_outcome(event["object"])
            if outcome:
                return outcome
            report(f"job {name}", cluster.job_pods(namespace, name))
        return None

    expired = (
        f"timed out after {{timeout}}s waiting for job {name} in namespace "
        f"{namespace}; it is still running (check with python -m jobs.status)"
    )

    return wait_until(look, wake, timeout=timeout, expired=expired)


def wait_jobset(
    cluster: Cluster, namespace: str, name: str, *, progress: Progress, timeout: float | None = None
) -> JobOutcome:
    """Poll a JobSet until it completes or fails, reporting its pods as they change.

    Raises:
        ClusterError: the JobSet vanished, the API failed, or `timeout` seconds passed.
    """
    report = _PodReport(progress)

    def look() -> JobOutcome | None:
        try:
            jobset = cluster.get_jobset(namespace, name)
        except ClusterNotFoundError as e:
            raise ClusterError(
                f"jobset {name} in namespace {namespace} was deleted before it finished"
            ) from e
        outcome = jobset_outcome(jobset)
        if outcome is None:
            restarts = (jobset.get("status") or {}).get("restarts", 0)
            report(f"jobset {name} (restarts {restarts})", cluster.jobset_pods(namespace, name))
        return outcome

    expired = (
        f"timed out after {{timeout}}s waiting for jobset {name} in namespace "
        f"{namespace}; it is still running (check with python -m jobs.status)"
    )

    return wait_until(look, _sleep, timeout=timeout, expired=expired, period=POLL_SECONDS)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def wait_deleted(cluster: Cluster, namespace: str, name: str, timeout: float = 300) -> None:
    """Block until the Job object is gone (watched, like wait_job)."""
    read: dict[str, client.V1Job] = {}

    def look() -> bool | None:
        job = cluster.job_or_none(namespace, name)
        if job is None:
            return True
        read["job"] = job
        return None

    def wake(seconds: float) -> bool | None:
        events = cluster.watch_job(read["job"], seconds)
        return True if any(event["type"] == "DELETED" for event in events) else None

    expired = (
        f"job {name} in namespace {namespace} is still being deleted after "
        f"{{timeout}}s; check its pods with kubectl get pods -n {namespace}"
    )

    wait_until(look, wake, timeout=timeout, expired=expired)


def wait_pod_started(
    cluster: Cluster,
    namespace: str,
    job_name: str,
    timeout: float | None = None,
    *,
    progress: Progress,
    worker: int | None = None,
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
    report = _PodReport(progress)
    read: dict[str, str | None] = {}

    def look() -> str | None:
        job = cluster.get_job(namespace, job_name)
        every, read["version"] = cluster.job_pods_listed(namespace, job_name)
        pods = [p for p in every if p.metadata.name not in skip]
        if job.spec.completion_mode == "Indexed" or worker is not None:
            want = str(worker or 0)
            pods = [p for p in pods if (p.metadata.annotations or {}).get(INDEX_ANNOTATION) == want]
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
        report(f"job {job_name}", every)
        return None

    def wake(seconds: float) -> None:
        # Wake on the first change to the Job's pods (or after a while, to look again).
        for _ in cluster.watch_job_pods(namespace, job_name, read["version"], seconds):
            break

    expired = (
        f"no running pod for job {job_name} in namespace {namespace} after "
        f"{{timeout}}s; check `python -m jobs.status -n {namespace}`"
    )

    return wait_until(look, wake, timeout=timeout, expired=expired)


def follow_job(
    cluster: Cluster,
    namespace: str,
    job_name: str,
    *,
    progress: Progress,
    worker: int | None = None,
    timeout: float | None = None,
) -> Iterator[str]:
    """The trainer's log across the Job's pod retries, until the Job is no longer active."""
    seen: set[str] = set()
    while True:
        try:
            pod = wait_pod_started(
                cluster, namespace, job_name, timeout, progress=progress, worker=worker,
                skip=frozenset(seen),
            )  # fmt: skip
        except ClusterError:
            if seen:  # the Job ended after the pods we followed
                return
            raise
        seen.add(pod)
        yield from cluster.stream_log(namespace, pod, follow=True)
