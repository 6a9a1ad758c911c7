"""Print (or follow) a trainer Job's log: `python -m jobs.logs JOB [--follow]`."""

from __future__ import annotations

import sys

from jobs import _cli
from jobs.spec import DEFAULT_NAMESPACE, SpecError


def logs(
    job: str | None = None,
    model: str | None = None,
    run_id: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
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
        namespace: the namespace of the Job.
        follow: keep streaming until the container ends.
        tail: only the last N lines.
        worker: for multi-worker Jobs, the worker index (default: the newest pod).
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.cluster import Cluster, load_api_client
    from jobs.manifest import selector

    cluster = Cluster(load_api_client(kubeconfig, context))
    if not job:
        if not (model and run_id not in (None, "")):
            raise SpecError("missing job: pass a Job name, or --model and --run-id")
        found = cluster.list_jobs(namespace, selector(str(model), str(run_id)))
        if not found:
            raise _cli.CommandFailedError(
                f"no job for model {model} run id {run_id} in namespace {namespace}"
            )
        job = found[0].metadata.name
    if follow:
        pod = cluster.wait_pod_started(namespace, job)
        if worker is not None:
            pod = _worker_pod(cluster, namespace, job, worker)
    else:
        pods = cluster.job_pods(namespace, job)
        if not pods:
            raise _cli.CommandFailedError(f"job {job} in namespace {namespace} has no pods yet")
        pod = (
            _worker_pod(cluster, namespace, job, worker)
            if worker is not None
            else pods[-1].metadata.name
        )
    for line in cluster.stream_log(namespace, pod, follow=follow, tail_lines=tail):
        print(line, flush=True)


def _worker_pod(cluster, namespace: str, job: str, worker: int) -> str:
    annotation = "batch.kubernetes.io/job-completion-index"
    pods = [
        p
        for p in cluster.job_pods(namespace, job)
        if (p.metadata.annotations or {}).get(annotation) == str(worker)
    ]
    if not pods:
        raise _cli.CommandFailedError(f"job {job} has no pod for worker {worker}")
    return pods[-1].metadata.name


main = _cli.entrypoint(logs, "jobs.logs")

if __name__ == "__main__":
    sys.exit(main())
