"""Submit trainer Jobs: `python -m jobs.submit --model lstm [--dry-run | --wait | --follow]`."""

from __future__ import annotations

import os
import sys
from typing import Any

from jobs import _cli
from jobs import spec as specs
from jobs.manifest import build_objects, to_yaml
from trainer.contract import (
    ACCELERATOR_ENV,
    IMAGE_ENV,
    OUTPUT_ENV,
    PEER_TIMEOUT_DEFAULT,
    new_run_id,
)


def build_specs(
    model: Any = "lstm",
    run_id: Any = None,
    **fields: Any,
) -> list[specs.JobSpec]:
    """One validated JobSpec per model named by `model` (mean, lstm, all), sharing one run id."""
    run_id = new_run_id() if run_id in (None, "") else run_id
    return [specs.JobSpec(model=m, run_id=run_id, **fields) for m in specs.resolve_models(model)]


def submit(
    model: str = "lstm",
    image: str | None = None,
    namespace: str | None = None,
    gpus: int = 1,
    accelerator: str | None = None,
    epochs: int = 3,
    batch_size: int = 64,
    data: str = specs.DEFAULT_DATA,
    output: str | None = None,
    run_id: str | None = None,
    workers: int = 1,
    extra_args: Any = (),
    node_selector: Any = None,
    tolerations: Any = None,
    cpu: str = "3",
    cpu_limit: str = "4",
    memory: str = "10Gi",
    memory_limit: str = "10Gi",
    service_account: str = specs.DEFAULT_SERVICE_ACCOUNT,
    active_deadline_seconds: int = 6 * 3600,
    backoff_limit: int = 3,
    peer_timeout: int = PEER_TIMEOUT_DEFAULT,
    ttl_seconds_after_finished: int = 3 * 24 * 3600,
    name: str = specs.DEFAULT_NAME,
    queue: str = "",
    dry_run: bool = False,
    wait: bool = False,
    follow: bool = False,
    retries: int = 0,
    timeout: float | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> None:
    """Build the trainer Job(s) for a model and create them in the cluster.

    Args:
        model: mean, lstm, or all (one Job per model, same run id).
        image: the trainer image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/imdb-train:TAG
            (default: $IMDB_TRAIN_IMAGE; required; `make image push IMAGE=...` builds it).
        namespace: where the Jobs run (default: the kubeconfig context's, or the pod's in a
            cluster, else `default`: the rule of every jobs.* command and kubectl).
        gpus: GPUs per worker (0: CPU only, no GPU node selector).
        accelerator: the GPU type, required with GPUs (default IMDB_TRAIN_ACCELERATOR): one
            of GKE's names (nvidia-l4, nvidia-tesla-t4, nvidia-h100-80gb, ...), rendered as
            the node selector cloud.google.com/gke-accelerator (Autopilot requires it).
        epochs: training epochs.
        batch_size: GLOBAL batch size, split over all replicas.
        data: keras (official imdb.npz), an aclImdb tarball/dir, or gs://.
        output: store for artifacts, e.g. gs://bucket/imdb; runs land at OUTPUT/MODEL/RUN_ID/
            (default: $IMDB_TRAIN_OUTPUT; required).
        run_id: run id (default: UTC timestamp + random suffix); the Job is NAME-MODEL-RUN_ID.
        workers: workers (>1: an Indexed Job with a headless Service, MultiWorkerMirrored).
        extra_args: more trainer arguments, e.g. '["--promote"]'.
        node_selector: key=value[,key=value] or JSON (default: none; on GKE e.g.
            cloud.google.com/gke-accelerator=nvidia-l4).
        tolerations: JSON list of tolerations (default: the nvidia.com/gpu taint when gpus > 0).
        cpu: CPU request per worker.
        cpu_limit: CPU limit per worker.
        memory: memory request per worker.
        memory_limit: memory limit per worker.
        service_account: the trainer's ServiceAccount (Workload Identity).
        active_deadline_seconds: the whole Job, retries included, is stopped after this.
        backoff_limit: retries of a failed pod (exit 75 counts, preemption does not); with
            --workers N, retries of the whole group (the Job's backoffLimit is N times this).
        peer_timeout: --workers N: seconds each worker waits for the whole group to start
            (the slowest peer's scheduling, node scale-up, image pull, TensorFlow import and
            data loading) before it exits 75, so that a partial group frees its GPUs.
        ttl_seconds_after_finished: finished Jobs are deleted after this.
        name: name prefix and app.kubernetes.io/instance label.
        queue: Kueue LocalQueue; the Job is created suspended with kueue.x-k8s.io/queue-name and
            Kueue starts it (a multi-worker group all at once) when the queue has quota.
        dry_run: print the YAML that would be sent; needs no cluster.
        wait: watch the Jobs to completion; exit 1 if any failed.
        follow: stream the trainer pod's log.
        retries: with --wait, re-run a failed Job as a whole this many times (same run id, so
            the trainer resumes from its checkpoints); never after bad input (exit 2) or the
            deadline. The cluster already retries within --backoff-limit; this is on top.
        timeout: seconds to wait (default: no limit).
        kubeconfig: kubeconfig file (default: KUBECONFIG or ~/.kube/config; in-cluster in a pod).
        context: kubeconfig context.
    """
    retries = specs.to_int("retries", retries, 0)  # before anything is created
    from jobs.cluster import resolve_namespace

    namespace = resolve_namespace(namespace, kubeconfig, context)
    job_specs = build_specs(
        model=model,
        run_id=run_id,
        image=image or os.environ.get(IMAGE_ENV, ""),
        namespace=namespace,
        gpus=gpus,
        accelerator=accelerator or os.environ.get(ACCELERATOR_ENV, ""),
        epochs=epochs,
        batch_size=batch_size,
        data=data,
        output=output or os.environ.get(OUTPUT_ENV, ""),
        workers=workers,
        extra_args=extra_args,
        node_selector=node_selector,
        tolerations=tolerations,
        cpu_request=cpu,
        cpu_limit=cpu_limit,
        memory_request=memory,
        memory_limit=memory_limit,
        service_account=service_account,
        active_deadline_seconds=active_deadline_seconds,
        backoff_limit=backoff_limit,
        peer_timeout=peer_timeout,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        name=name,
        queue=queue,
    )
    objects = [obj for s in job_specs for obj in build_objects(s)]
    if dry_run:
        sys.stdout.write(to_yaml(objects))
        return

    from jobs.cluster import Cluster, load_api_client

    cluster = Cluster(load_api_client(kubeconfig, context))
    _create(cluster, job_specs, objects)
    if not (wait or follow):
        first = job_specs[0]
        print(f"follow with: python -m jobs.logs {first.job_name} -n {first.namespace} --follow")
        return
    if follow:
        _follow(cluster, job_specs, timeout)
    if wait:
        _wait(cluster, job_specs, retries, timeout)


def _create(cluster, job_specs: list[specs.JobSpec], objects: list[Any]) -> None:
    cluster.create(objects)
    for s in job_specs:
        print(
            f"job.batch/{s.job_name} created in namespace {s.namespace}; "
            f"results: {s.output.rstrip('/')}/{s.model}/{s.run_id}/"
        )


def _follow(cluster, job_specs: list[specs.JobSpec], timeout: float | None) -> None:
    """Stream each Job's trainer log in turn, prefixed with the model when there are several."""
    for s in job_specs:
        for line in cluster.follow_job(s.namespace, s.job_name, timeout=timeout):
            print(f"[{s.model}] {line}" if len(job_specs) > 1 else line, flush=True)


def _wait(cluster, job_specs: list[specs.JobSpec], retries: int, timeout: float | None) -> None:
    """Watch every Job to its end; raise CommandFailedError when any failed."""
    failed = []
    for s in job_specs:
        outcome = _wait_with_retries(cluster, s, retries, timeout)
        if outcome.succeeded:
            print(f"job.batch/{s.job_name} succeeded")
        else:
            failed.append(s.job_name)
            print(
                f"job.batch/{s.job_name} failed: {outcome.reason}: {outcome.message}",
                file=sys.stderr,
            )
    if failed:
        raise _cli.CommandFailedError(f"{len(failed)} of {len(job_specs)} jobs failed")


def _wait_with_retries(cluster, spec: specs.JobSpec, retries: int, timeout: float | None):
    from jobs.cluster import PERMANENT_REASONS

    for attempt in range(retries + 1):
        outcome = cluster.wait_job(spec.namespace, spec.job_name, timeout=timeout)
        if outcome.succeeded or outcome.reason in PERMANENT_REASONS or attempt == retries:
            return outcome
        print(
            f"job.batch/{spec.job_name} failed ({outcome.reason}); re-running it as a whole, "
            f"retry {attempt + 1} of {retries}",
            file=sys.stderr,
        )
        # Foreground: the Job goes only after its pods, so old workers are not still writing
        # checkpoints (or holding their hostnames) when the new ones start.
        cluster.delete_job(spec.namespace, spec.job_name, propagation="Foreground")
        cluster.wait_deleted(spec.namespace, spec.job_name)
        cluster.create(build_objects(spec))
    return outcome


main = _cli.entrypoint(submit, "jobs.submit")

if __name__ == "__main__":
    sys.exit(main())
