"""Submit trainer Jobs: `python -m jobs.submit --model lstm [--dry-run | --wait | --follow]`."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from typing import Any

from jobs import _cli
from jobs import spec as specs
from jobs.manifest import to_yaml
from jobs.objects import build_objects
from jobs.values import to_int
from trainer.contract import new_run_id


def build_specs(
    model: Any = "lstm",
    run_id: Any = None,
    **fields: Any,
) -> list[specs.JobSpec]:
    """One validated JobSpec per model named by `model` (mean, lstm, all), sharing one run id."""
    run_id = new_run_id() if run_id in (None, "") else run_id
    return [specs.JobSpec(model=m, run_id=run_id, **fields) for m in specs.resolve_models(model)]


def resolve_specs(
    model: Any, kubeconfig: str | None, context: str | None, settings: dict[str, Any]
) -> list[specs.JobSpec]:
    """The JobSpecs a command line gives (jobs.submit's, jobs.doctor's): the environment's
    defaults filled in, the namespace resolved as kubectl resolves it, each one validated."""
    for field in dataclasses.fields(specs.JobSpec):
        if field.metadata.get("env") and settings.get(field.name) in (None, ""):
            settings[field.name] = os.environ.get(field.metadata["env"], "")
    from jobs.kube import resolve_namespace

    settings["namespace"] = resolve_namespace(settings.pop("namespace", None), kubeconfig, context)
    return build_specs(model=model, **settings)


# What jobs.submit does with the Jobs, beside what they are (the JobSpec's fields).
_COMMAND_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("dry_run", False, "print the YAML that would be sent; needs no cluster"),
    ("wait", False, "watch the Jobs to completion; exit 1 if any failed"),
    ("follow", False, "stream the trainer pod's log"),
    ("retries", 0, "with --wait, re-run a failed Job as a whole this many times (same run id, "
     "so the trainer resumes from its checkpoints); never after bad input (exit 2) or the "
     "deadline. The cluster already retries within --backoff-limit; this is on top"),
    ("timeout", None, "seconds to wait (default: no limit)"),
    ("kubeconfig", None, "kubeconfig file (default: KUBECONFIG or ~/.kube/config; in-cluster "
     "in a pod)"),
    ("context", None, "kubeconfig context"),
)  # fmt: skip


def submit(
    model: str = "lstm",
    *,
    dry_run: bool = False,
    wait: bool = False,
    follow: bool = False,
    retries: int = 0,
    timeout: float | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    **settings: Any,
) -> None:
    # The signature and help fire shows are generated from JobSpec below (_signature).
    retries = to_int("retries", retries, 0)  # before anything is created
    job_specs = resolve_specs(model, kubeconfig, context, settings)
    if retries and job_specs[0].runtime == specs.RUNTIME_JOBSET:
        raise specs.SpecError(
            f"invalid retries {retries} with --runtime jobset: a JobSet restarts itself "
            "(--backoff-limit is its maxRestarts); expected 0"
        )
    objects = [obj for s in job_specs for obj in build_objects(s)]
    if dry_run:
        sys.stdout.write(to_yaml(objects))
        return

    from jobs.kube import Cluster, load_api_client

    cluster = Cluster(load_api_client(kubeconfig, context))
    _create(cluster, job_specs, objects)
    if not (wait or follow):
        first = job_specs[0]
        print(
            f"follow with: python -m jobs.logs {first.pod_job_name} -n {first.namespace} --follow"
        )
        return
    if follow:
        _follow(cluster, job_specs, timeout)
    if wait:
        _wait(cluster, job_specs, retries, timeout)


def _create(cluster, job_specs: list[specs.JobSpec], objects: list[Any]) -> None:
    cluster.create(objects)
    for s in job_specs:
        print(
            f"{s.kind}/{s.job_name} created in namespace {s.namespace}; "
            f"results: {s.output.rstrip('/')}/{s.model}/{s.run_id}/"
        )


def _follow(cluster, job_specs: list[specs.JobSpec], timeout: float | None) -> None:
    """Stream each Job's trainer log in turn, prefixed with the model when there are several."""
    from jobs.waits import follow_job

    for s in job_specs:
        lines = follow_job(cluster, s.namespace, s.pod_job_name, progress=_cli.progress,
                           timeout=timeout)  # fmt: skip
        for line in lines:
            print(f"[{s.model}] {line}" if len(job_specs) > 1 else line, flush=True)


def _wait(cluster, job_specs: list[specs.JobSpec], retries: int, timeout: float | None) -> None:
    """Watch every Job to its end; raise CommandFailedError when any failed."""
    failed = []
    for s in job_specs:
        outcome = _wait_with_retries(cluster, s, retries, timeout)
        if outcome.succeeded:
            print(f"{s.kind}/{s.job_name} succeeded")
        else:
            failed.append(s.job_name)
            print(
                f"{s.kind}/{s.job_name} failed: {outcome.reason}: {outcome.message}",
                file=sys.stderr,
            )
    if failed:
        raise _cli.CommandFailedError(f"{len(failed)} of {len(job_specs)} jobs failed")


def _wait_with_retries(cluster, spec: specs.JobSpec, retries: int, timeout: float | None):
    from jobs import waits

    where = (cluster, spec.namespace, spec.job_name)
    if spec.runtime == specs.RUNTIME_JOBSET:
        return waits.wait_jobset(*where, progress=_cli.progress, timeout=timeout)
    for attempt in range(retries + 1):
        outcome = waits.wait_job(*where, progress=_cli.progress, timeout=timeout)
        if outcome.succeeded or outcome.reason in waits.PERMANENT_REASONS or attempt == retries:
            return outcome
        print(
            f"job.batch/{spec.job_name} failed ({outcome.reason}); re-running it as a whole, "
            f"retry {attempt + 1} of {retries}",
            file=sys.stderr,
        )
        # Foreground: the Job goes only after its pods, so old workers are not still writing
        # checkpoints (or holding their hostnames) when the new ones start.
        cluster.delete_job(spec.namespace, spec.job_name, propagation="Foreground")
        waits.wait_deleted(*where)
        cluster.create(build_objects(spec))
    return outcome


def _signature() -> tuple[inspect.Signature, str]:
    """submit's flags: every JobSpec field (its default and help), then _COMMAND_OPTIONS."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default="lstm")]  # fmt: skip
    lines = [
        "Build the trainer Job(s) for a model and create them in the cluster.",
        "",
        "Args:",
        "    model: mean, lstm, or all (one Job per model, same run id).",
    ]
    for field in dataclasses.fields(specs.JobSpec):
        if field.name == "model":
            continue
        params.append(inspect.Parameter(field.name, kw, default=field.default))
        env = field.metadata.get("env")
        extra = f" (default: ${env})" if env else ""
        lines.append(f"    {field.name}: {field.metadata['help']}{extra}.")
    for name, default, help_text in _COMMAND_OPTIONS:
        params.append(inspect.Parameter(name, kw, default=default))
        lines.append(f"    {name}: {help_text}.")
    return inspect.Signature(params), "\n".join(lines) + "\n"


submit.__signature__, submit.__doc__ = _signature()  # type: ignore[attr-defined]

main = _cli.entrypoint(submit, "jobs.submit")

if __name__ == "__main__":
    sys.exit(main())
