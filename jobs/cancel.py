"""Cancel trainer Jobs: `python -m jobs.cancel JOB...` or `--model lstm --run-id ID`."""

from __future__ import annotations

import sys

from jobs import _cli
from jobs.spec import SpecError


def cancel(
    *jobs: str,
    model: str | None = None,
    run_id: str | None = None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """Delete Jobs (or JobSets); their pods (and Services) go too (propagation Background).

    Args:
        *jobs: Job or JobSet names (a JobSet's Job stands for its JobSet).
        model: select this model's Jobs by label (all its runs unless --run-id).
        run_id: select the Jobs of this run id (all models unless --model).
        namespace: the namespace of the Jobs (default: the kubeconfig context's).
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config).
        context: kubeconfig context.
    """
    from jobs.kube import connect, owning_jobset
    from jobs.manifest import selector

    by_label = run_id not in (None, "") or model not in (None, "")
    if not jobs and not by_label:
        raise SpecError("missing job: pass Job names, or --model and/or --run-id")
    cluster, namespace = connect(namespace, kubeconfig, context)
    names = [str(j) for j in jobs]
    if by_label:
        rid = None if run_id in (None, "") else str(run_id)
        found = cluster.list_jobs(namespace, selector(model, rid))
        if not found and not names:
            what = " ".join(
                f"{k} {v}" for k, v in (("model", model), ("run id", rid)) if v not in (None, "")
            )
            raise _cli.CommandFailedError(f"no job with {what} in namespace {namespace}")
        # A JobSet's Jobs would be made again: the JobSet is what goes.
        names += [owning_jobset(j) or j.metadata.name for j in found]
    for name in dict.fromkeys(names):
        _, jobset = cluster.find_run(namespace, name)
        if jobset:
            cluster.delete_jobset(namespace, jobset)
            print(f"jobset/{jobset} deleted from namespace {namespace} (its Jobs and pods too)")
        else:
            cluster.delete_job(namespace, name)
            print(f"job.batch/{name} deleted from namespace {namespace} (pods are removed too)")


main = _cli.entrypoint(cancel, "jobs.cancel")

if __name__ == "__main__":
    sys.exit(main())
