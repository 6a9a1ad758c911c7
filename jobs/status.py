"""Show the trainer Jobs in a namespace: `python -m jobs.status [--model lstm] [--run-id ID]`."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from jobs import _cli
from jobs.manifest import selector
from jobs.names import LABEL_MODEL, LABEL_RUN_ID


def job_state(job, pods=None) -> str:
    """Complete, Failed (reason), Suspended, Running, or Pending (why), from the Job and pods.

    A Job counts its pods as active from creation on; it runs only once a container does.
    """
    from jobs.waits import job_outcome, pod_reason

    outcome = job_outcome(job)
    if outcome is not None:
        return "Complete" if outcome.succeeded else f"Failed ({outcome.reason})"
    status = job.status
    if job.spec and job.spec.suspend:
        return "Suspended"
    if pods is None:
        return "Running" if status and status.active else "Pending"
    live = [p for p in pods if not (p.metadata and p.metadata.deletion_timestamp)
            and (p.status is None or p.status.phase in (None, "Pending", "Running"))]  # fmt: skip
    running = [p for p in live if p.status and p.status.phase == "Running"]
    pending = [p for p in live if p not in running]
    if running and not pending:
        return "Running"
    # A worker group runs only when every worker does: one Unschedulable member keeps the
    # others waiting for it, so the group is Pending, with that member's reason.
    reasons = [r for r in (pod_reason(p)[0] for p in pending) if r]
    counted = f"{len(running)}/{len(live)} running" if running else ""
    detail = "; ".join(x for x in (reasons[-1] if reasons else "", counted) if x)
    return f"Pending ({detail})" if detail else "Pending"


def _age(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    seconds = int((datetime.now(timezone.utc) - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def status(
    model: str | None = None,
    run_id: str | None = None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """List imdb-train Jobs (submitted and scheduled): state, then each unfinished Job's pods
    (phase, waiting reason) and latest events (FailedScheduling, image pulls, admission).

    Args:
        model: only this model (mean or lstm).
        run_id: only this run id.
        namespace: the namespace to look in (default: the kubeconfig context's).
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.kube import ClusterError, connect, kueue_admission
    from jobs.waits import pod_line

    cluster, namespace = connect(namespace, kubeconfig, context)
    run_id = None if run_id is None else str(run_id)
    jobs = cluster.list_jobs(namespace, selector(model, run_id))
    if not jobs:
        print(f"no imdb-train jobs in namespace {namespace}")
        return
    jobs = sorted(jobs, key=lambda j: j.metadata.creation_timestamp or datetime.min)
    pods = {j.metadata.name: cluster.job_pods(namespace, j.metadata.name) for j in jobs}
    rows = [("NAME", "MODEL", "RUN-ID", "STATE", "ACTIVE", "SUCCEEDED", "FAILED", "AGE")]
    for job in jobs:
        labels = job.metadata.labels or {}
        st = job.status
        rows.append(
            (
                job.metadata.name,
                labels.get(LABEL_MODEL, "-"),
                # A CronJob's Job has no run-id label: its name is the run id.
                labels.get(LABEL_RUN_ID, job.metadata.name),
                job_state(job, pods[job.metadata.name]),
                str((st and st.active) or 0),
                str((st and st.succeeded) or 0),
                str((st and st.failed) or 0),
                _age(job.metadata.creation_timestamp),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    unfinished = [j for j in jobs if not job_state(j).startswith(("Complete", "Failed"))]
    for job in unfinished:
        name = job.metadata.name
        print(f"\n{name}:")
        for pod in pods[name]:
            print(f"  pod {pod_line(pod)}")
        if job.spec and job.spec.suspend:
            # A queued Job waits for Kueue; one waiting long says so, in Kueue's words
            # (a missing LocalQueue or an absent Kueue would wedge retraining unnoticed).
            waited = _age(job.metadata.creation_timestamp)
            print(f"  suspended {waited}, not admitted: {kueue_admission(cluster, job)}")
        try:
            events = cluster.job_events(namespace, [name, *(p.metadata.name for p in pods[name])])
        except ClusterError as e:
            print(f"  (no events: {e})")
            continue
        for ev in events:
            when = ev.last_timestamp or ev.event_time or ev.metadata.creation_timestamp
            obj = f"{ev.involved_object.kind.lower()}/{ev.involved_object.name}"
            print(f"  {_age(when)} {ev.type} {ev.reason} {obj}: {ev.message}")


main = _cli.entrypoint(status, "jobs.status")

if __name__ == "__main__":
    sys.exit(main())
