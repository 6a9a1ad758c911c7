"""Print (or follow) a trainer Job's log: `python -m jobs.logs JOB [--follow]`."""

from __future__ import annotations

import sys

from jobs import _cli
from jobs.spec import SpecError


def logs(
    job: str | None = None,
    model: str | None = None,
    run_id: str | None = None,
    namespace: str | None = None,
    follow: bool = False,
    tail: int | None = None,
    worker: int | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """Print the trainer log of a Job's newest pod.

    Args:
        job: the Job name (or give --model and --run-id).
        model: with run_id, find the Job by its labels.
        run_id: with model, find the Job by its labels.
        namespace: the namespace of the Job (default: the kubeconfig context's).
        follow: keep streaming, across pod retries, for as long as the Job is active.
        tail: only the last N lines.
        worker: for multi-worker Jobs, the worker index (default: 0, the chief).
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.kube import connect
    from jobs.manifest import selector
    from jobs.names import INDEX_ANNOTATION
    from jobs.waits import follow_job, pod_reason

    cluster, namespace = connect(namespace, kubeconfig, context)
    if not job:
        if not (model and run_id not in (None, "")):
            raise SpecError("missing job: pass a Job name, or --model and --run-id")
        found = cluster.list_jobs(namespace, selector(str(model), str(run_id)))
        if not found:
            raise _cli.CommandFailedError(
                f"no job for model {model} run id {run_id} in namespace {namespace}"
            )
        job = found[0].metadata.name
    else:
        job = cluster.find_run(namespace, str(job))[0]  # a JobSet's name: its Job
    if follow:
        for line in follow_job(cluster, namespace, job, progress=_cli.progress, worker=worker):
            print(line, flush=True)
        return
    pods = cluster.job_pods(namespace, job)
    if not pods:
        raise _cli.CommandFailedError(f"job {job} in namespace {namespace} has no pods yet")
    indexed = any(INDEX_ANNOTATION in (p.metadata.annotations or {}) for p in pods)
    pod = (
        _worker_pod(cluster, namespace, job, worker or 0)
        if worker is not None or indexed
        else pods[-1]
    )
    reason, message = pod_reason(pod)
    if pod.status and pod.status.phase == "Pending":
        raise _cli.CommandFailedError(
            f"pod {pod.metadata.name} of job {job} has not started: {reason or 'Pending'}"
            f"{': ' + message if message else ''}; pass --follow to wait for it"
        )
    for line in cluster.stream_log(namespace, pod.metadata.name, tail_lines=tail, follow=False):
        print(line, flush=True)


def _worker_pod(cluster, namespace: str, job: str, worker: int):
    from jobs.names import INDEX_ANNOTATION

    pods = [
        p
        for p in cluster.job_pods(namespace, job)
        if (p.metadata.annotations or {}).get(INDEX_ANNOTATION) == str(worker)
    ]
    if not pods:
        raise _cli.CommandFailedError(f"job {job} has no pod for worker {worker}")
    return pods[-1]


main = _cli.entrypoint(logs, "jobs.logs")

if __name__ == "__main__":
    sys.exit(main())
