"""Cancel trainer Jobs: `python -m jobs.cancel JOB...` or `--model lstm --run-id ID`."""

from __future__ import annotations

import sys

from jobs import _cli
from jobs.spec import DEFAULT_NAMESPACE, SpecError


def cancel(
    *jobs: str,
    model: str | None = None,
    run_id: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """Delete Jobs; their pods (and Services) go too (propagationPolicy Background).

    Args:
        *jobs: Job names.
        model: with or without run_id, select Jobs by labels instead of names.
        run_id: select the Jobs of this run id (all models unless --model).
        namespace: the namespace of the Jobs.
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.cluster import Cluster, load_api_client
    from jobs.manifest import selector

    if not jobs and run_id in (None, ""):
        raise SpecError("missing job: pass Job names, or --run-id [--model]")
    cluster = Cluster(load_api_client(kubeconfig, context))
    names = [str(j) for j in jobs]
    if run_id not in (None, ""):
        found = cluster.list_jobs(namespace, selector(model, str(run_id)))
        if not found and not names:
            raise _cli.CommandFailedError(f"no job with run id {run_id} in namespace {namespace}")
        names += [j.metadata.name for j in found]
    for name in dict.fromkeys(names):
        cluster.delete_job(namespace, name)
        print(f"job.batch/{name} deleted from namespace {namespace} (pods are removed too)")


main = _cli.entrypoint(cancel, "jobs.cancel")

if __name__ == "__main__":
    sys.exit(main())
