"""Show the trainer Jobs in a namespace: `python -m jobs.status [--model lstm] [--run-id ID]`."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from jobs import _cli
from jobs.manifest import LABEL_MODEL, LABEL_RUN_ID, selector
from jobs.spec import DEFAULT_NAMESPACE


def job_state(job) -> str:
    """Complete, Failed (reason), Running or Pending, from the Job's status."""
    from jobs.cluster import job_outcome

    outcome = job_outcome(job)
    if outcome is not None:
        return "Complete" if outcome.succeeded else f"Failed ({outcome.reason})"
    status = job.status
    if status and status.active:
        return "Running"
    return "Pending"


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
    namespace: str = DEFAULT_NAMESPACE,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """List imdb-train Jobs (submitted and scheduled) with their state.

    Args:
        model: only this model (mean or lstm).
        run_id: only this run id.
        namespace: the namespace to look in.
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.cluster import Cluster, load_api_client

    cluster = Cluster(load_api_client(kubeconfig, context))
    run_id = None if run_id is None else str(run_id)
    jobs = cluster.list_jobs(namespace, selector(model, run_id))
    if not jobs:
        print(f"no imdb-train jobs in namespace {namespace}")
        return
    rows = [("NAME", "MODEL", "RUN-ID", "STATE", "ACTIVE", "SUCCEEDED", "FAILED", "AGE")]
    for job in sorted(jobs, key=lambda j: j.metadata.creation_timestamp or datetime.min):
        labels = job.metadata.labels or {}
        st = job.status
        rows.append(
            (
                job.metadata.name,
                labels.get(LABEL_MODEL, "-"),
                # A CronJob's Job has no run-id label: its name is the run id.
                labels.get(LABEL_RUN_ID, job.metadata.name),
                job_state(job),
                str((st and st.active) or 0),
                str((st and st.succeeded) or 0),
                str((st and st.failed) or 0),
                _age(job.metadata.creation_timestamp),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


main = _cli.entrypoint(status, "jobs.status")

if __name__ == "__main__":
    sys.exit(main())
