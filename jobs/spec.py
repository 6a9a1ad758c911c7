"""JobSpec: everything needed to build one trainer Job, validated where it is made."""

from __future__ import annotations

import dataclasses
from typing import Any

from jobs.values import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    GKE_GPU_COUNTS,
    GPU_TOLERATIONS,
    IMAGE_REFERENCE,
    SpecError,
    check_accelerator,
    check_output,
    check_trainer_args,
    extra_args,
    node_selector,
    optional_int,
    quantity,
    secret_names,
    string_map,
    to_int,
    tolerations,
)
from trainer import contract
from trainer.contract import DEFAULT_DATA, MODELS, WORKER_PORT, new_run_id

VERSION = "0.1.0"
"""The app version: chart appVersion, the image tag and the `app.kubernetes.io/version` label."""

MODEL_CHOICES = (*MODELS, "all")

DEFAULT_NAME = "imdb-train"
# Placeholders of the example manifests in k8s/ (jobs.render); a real submission names its own.
EXAMPLE_IMAGE = f"imdb-train:{VERSION}"
DEFAULT_NAMESPACE = "default"
EXAMPLE_OUTPUT = "gs://imdb-train-runs/imdb"
EXAMPLE_ACCELERATOR = "nvidia-l4"
DEFAULT_SERVICE_ACCOUNT = "imdb-train"
MAX_NAME = 63  # a Job name becomes a label value and, for indexed pods, a hostname prefix

# How a run's pods are made: a plain (Indexed, for a worker group) Job, which needs nothing
# installed, or a JobSet (jobset.x-k8s.io), whose failure policy restarts the whole group.
RUNTIME_JOB = "job"
RUNTIME_JOBSET = "jobset"
RUNTIMES = (RUNTIME_JOB, RUNTIME_JOBSET)
# The JobSet's one replicated Job; its pods are <jobset>-worker-0-<index>.<jobset>.
JOBSET_REPLICATED_JOB = "worker"


def jobset_child_job(jobset: str) -> str:
    """The Job a JobSet of ours makes (its pods: <job>-<index>)."""
    return f"{jobset}-{JOBSET_REPLICATED_JOB}-0"


def resolve_models(model: Any) -> list[str]:
    """Expand a --model value (`mean`, `lstm`, `all`, or a comma list) into model names.

    Raises:
        SpecError: a name is not one of MODEL_CHOICES.
    """
    names = list(model) if isinstance(model, (list, tuple)) else str(model).split(",")
    out: list[str] = []
    for raw in names:
        name = str(raw).strip()
        if name not in MODEL_CHOICES:
            raise SpecError(f"invalid model {name!r}: expected one of {', '.join(MODEL_CHOICES)}")
        for m in MODELS if name == "all" else (name,):
            if m not in out:
                out.append(m)
    return out


def setting(default: Any, help: str, *, chart: str = "", env: str = "") -> Any:
    """A JobSpec field: its default, its help (jobs.submit --help), the chart value that sets
    the same thing (`resources.requests.cpu`; tests/test_settings.py checks that
    values.yaml's default is this one), and the environment variable that supplies it."""
    return dataclasses.field(default=default, metadata={"help": help, "chart": chart, "env": env})


@dataclasses.dataclass
class JobSpec:
    """One trainer Job: which model, where from, where to, on what hardware.

    The one definition of a Job's settings: `jobs.submit`'s flags, defaults and help are
    generated from these fields, and the chart's values.yaml carries the same defaults.
    Values come as typed on a command line (fire may hand over 3, "3" or 3.0); each is
    checked and normalised in __post_init__, so the annotations give the normalised type.
    """

    model: str = setting("lstm", "mean or lstm (jobs.submit also takes all: one Job per model)")
    run_id: str | None = setting(
        None, "run id (default: UTC timestamp + random suffix); the Job is NAME-MODEL-RUN_ID"
    )
    image: str = setting(
        "", "the trainer image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/imdb-train:TAG or "
        "...@sha256:DIGEST (required; `make image push IMAGE=...` builds it)",
        chart="image", env=contract.IMAGE_ENV,
    )  # fmt: skip
    namespace: str | None = setting(
        None, "where the Jobs run (default: the kubeconfig context's, or the pod's in a "
        "cluster, else `default`: the rule of every jobs.* command and kubectl)",
    )  # fmt: skip
    name: str = setting(DEFAULT_NAME, "name prefix and app.kubernetes.io/instance label")
    gpus: int = setting(1, "GPUs per worker (0: CPU only, no GPU node selector)", chart="gpus")
    accelerator: str = setting(
        "", "the GPU type, required with GPUs: one of GKE's names (nvidia-l4, nvidia-tesla-t4, "
        "nvidia-h100-80gb, ...), rendered as the node selector "
        "cloud.google.com/gke-accelerator (Autopilot requires it)",
        chart="accelerator", env=contract.ACCELERATOR_ENV,
    )  # fmt: skip
    epochs: int = setting(contract.EPOCHS, "training epochs", chart="epochs")
    batch_size: int = setting(
        contract.BATCH_SIZE, "GLOBAL batch size, split over all replicas", chart="batchSize"
    )
    data: str = setting(
        DEFAULT_DATA, "keras (official imdb.npz), an aclImdb tarball or directory, or gs://",
        chart="data",
    )  # fmt: skip
    output: str = setting(
        "", "store for artifacts, e.g. gs://bucket/imdb; runs land at OUTPUT/MODEL/RUN_ID/ "
        "(required)", chart="output", env=contract.OUTPUT_ENV,
    )  # fmt: skip
    workers: int = setting(
        1, "workers (>1: a worker group, MultiWorkerMirroredStrategy; see --runtime)"
    )
    runtime: str = setting(
        RUNTIME_JOB, "job (a Job, Indexed with --workers N; needs nothing installed) or "
        "jobset (a JobSet: any member's failure restarts the whole group, up to "
        "--backoff-limit times, preemptions not counted; needs the JobSet controller)",
    )  # fmt: skip
    extra_args: tuple[str, ...] = setting(
        (), "more trainer arguments, e.g. '[\"--promote\", \"false\"]'",
        chart="retrain.extraArgs",
    )  # fmt: skip
    node_selector: dict[str, str] | None = setting(
        None, "extra node labels, key=value[,key=value] or JSON (the accelerator's is added)",
        chart="nodeSelector",
    )  # fmt: skip
    tolerations: list[dict[str, Any]] | None = setting(
        None, "JSON list of tolerations (default: the nvidia.com/gpu taint when gpus > 0)",
        chart="tolerations",
    )  # fmt: skip
    # Fit g2-standard-4 (L4) and n1-standard-4 + T4 nodes after GKE's reservations.
    cpu: str | None = setting("3", "CPU request per worker", chart="resources.requests.cpu")
    cpu_limit: str | None = setting("4", "CPU limit per worker", chart="resources.limits.cpu")
    memory: str | None = setting(
        "10Gi", "memory request per worker", chart="resources.requests.memory"
    )
    memory_limit: str | None = setting(
        "10Gi", "memory limit per worker", chart="resources.limits.memory"
    )
    ephemeral_storage: str | None = setting(
        None, "ephemeral-storage request per worker (Autopilot sizes node disks from it; "
        "/tmp and /cache count against it)", chart="resources.requests.ephemeral-storage",
    )  # fmt: skip
    service_account: str = setting(
        DEFAULT_SERVICE_ACCOUNT, "the trainer's ServiceAccount (Workload Identity)",
        chart="serviceAccount.name",
    )  # fmt: skip
    active_deadline_seconds: int | None = setting(
        6 * 3600, "the whole Job, retries included, is stopped after this",
        chart="activeDeadlineSeconds",
    )  # fmt: skip
    backoff_limit: int = setting(
        3, "retries of a failed pod (exit 75 counts, preemption does not); with --workers N, "
        "retries of the whole group (a JobSet's maxRestarts)", chart="backoffLimit",
    )  # fmt: skip
    peer_timeout: int = setting(
        contract.PEER_TIMEOUT_DEFAULT, "--workers N: seconds each worker waits for the whole "
        "group to start before it exits 78 (not counted against --backoff-limit), so that a "
        "partial group frees its GPUs; the default covers a GPU pool scaled up from zero and "
        "a 7 GB image pull",
    )  # fmt: skip
    ttl_seconds_after_finished: int | None = setting(
        3 * 24 * 3600, "finished Jobs are deleted after this"
    )
    termination_grace_period_seconds: int = setting(
        120, "seconds between SIGTERM and SIGKILL; the trainer checkpoints and exits 75 "
        "within it", chart="terminationGracePeriodSeconds",
    )  # fmt: skip
    image_pull_policy: str = setting(
        "IfNotPresent", "Always, IfNotPresent or Never", chart="image.pullPolicy"
    )
    image_pull_secrets: tuple[str, ...] = setting(
        (), "Secrets to pull a private image with, comma-separated names",
        chart="imagePullSecrets",
    )  # fmt: skip
    priority_class_name: str = setting(
        "", "the pods' PriorityClass (empty: the cluster default)", chart="priorityClassName"
    )
    kueue_priority_class: str = setting(
        "", "Kueue WorkloadPriorityClass of a queued Job (label kueue.x-k8s.io/priority-class)",
        chart="kueuePriorityClass",
    )  # fmt: skip
    pod_annotations: dict[str, str] | None = setting(
        None, "extra pod annotations, key=value[,key=value] or JSON", chart="podAnnotations"
    )
    pod_labels: dict[str, str] | None = setting(
        None, "extra pod labels, key=value[,key=value] or JSON", chart="podLabels"
    )
    tmp_size_limit: str = setting("10Gi", "size limit of /tmp", chart="tmpSizeLimit")
    cache_size_limit: str = setting(
        "10Gi", "size limit of /cache (HOME, the dataset cache)", chart="cacheSizeLimit"
    )
    shm_size_limit: str = setting(
        "1Gi", "size of the in-memory /dev/shm (counts against the memory limit)",
        chart="shmSizeLimit",
    )  # fmt: skip
    queue: str = setting(
        "", "Kueue LocalQueue: the Job is created suspended with kueue.x-k8s.io/queue-name "
        "and Kueue admits it (a worker group as one unit) when the queue has quota",
        chart="queue",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for check in (_check_identity, _check_training, _check_placement, _check_lifecycle,
                      _check_together):  # fmt: skip
            check(self)
        # Indexed pods are named <job>-<index> (a JobSet's <jobset>-worker-0-<index>), and
        # that must stay a DNS label.
        suffix = len(f"-{self.workers - 1}") if self.workers > 1 else 0
        if self.runtime == RUNTIME_JOBSET:
            suffix = len(jobset_child_job("") + f"-{self.workers - 1}")
        if len(self.job_name) + suffix > MAX_NAME:
            raise SpecError(
                f"invalid run id {self.run_id!r}: job name {self.job_name!r} is longer than "
                f"{MAX_NAME - suffix} characters; pass a shorter --run-id"
            )

    @property
    def job_name(self) -> str:
        return f"{self.name}-{self.model}-{self.run_id}"

    @property
    def pod_job_name(self) -> str:
        """The Job whose pods run the trainer: this one, or the JobSet's child Job."""
        if self.runtime == RUNTIME_JOBSET:
            return jobset_child_job(self.job_name)
        return self.job_name

    @property
    def kind(self) -> str:
        return "jobset" if self.runtime == RUNTIME_JOBSET else "job.batch"

    @property
    def service_name(self) -> str:
        """The headless Service of a multi-worker Job: same name, so pod DNS reads naturally."""
        return self.job_name

    @property
    def replicas(self) -> int:
        return self.workers * max(self.gpus, 1)

    def worker_hosts(self) -> list[str]:
        """`host:port` of every worker, the contract the trainer turns into TF_CONFIG."""
        return [
            f"{self.pod_job_name}-{i}.{self.service_name}:{WORKER_PORT}"
            for i in range(self.workers)
        ]

    def trainer_args(self, run_id: str | None = None) -> list[str]:
        """The trainer CLI contract: `python -m trainer --model ... --batch-size N`."""
        return [
            "--model", self.model,
            "--data", self.data,
            "--output", self.output,
            "--run-id", run_id or self.run_id,
            "--epochs", str(self.epochs),
            "--batch-size", str(self.batch_size),
            *self.extra_args,
        ]  # fmt: skip


def _check_identity(spec: JobSpec) -> None:
    """Model, run id, names and image: what the Job is called and runs."""
    if spec.model not in MODELS:
        raise SpecError(f"invalid model {spec.model!r}: expected one of {', '.join(MODELS)}")
    spec.run_id = new_run_id() if spec.run_id in (None, "") else spec.run_id
    if isinstance(spec.run_id, int) and not isinstance(spec.run_id, bool):
        spec.run_id = str(spec.run_id)  # fire reads --run-id 123 as an int
    if not contract.is_run_id(spec.run_id):
        raise SpecError(f"invalid run id {spec.run_id!r}: expected {contract.RUN_ID_HELP}")
    spec.namespace = spec.namespace or DEFAULT_NAMESPACE  # jobs.submit resolved it
    for field in ("namespace", "name", "service_account"):
        value = str(getattr(spec, field))
        if not DNS_LABEL.match(value) or len(value) > MAX_NAME:
            raise SpecError(
                f"invalid {field.replace('_', ' ')} {value!r}: expected a DNS label "
                "(lower-case letters, digits and '-', at most 63 characters)"
            )
        setattr(spec, field, value)
    spec.image = str(spec.image or "")
    if not spec.image:
        raise SpecError(
            f"missing image: pass --image REGISTRY/imdb-train:TAG or set {contract.IMAGE_ENV}; "
            "build and push it with `make image push IMAGE=REGISTRY/imdb-train:TAG` "
            "(docs/kubernetes.md)"
        )
    if not IMAGE_REFERENCE.match(spec.image):
        raise SpecError(
            f"invalid image {spec.image!r}: expected a reference like "
            "[registry/]repo/name[:tag][@sha256:digest] (lower-case repository path)"
        )
    spec.image_pull_secrets = secret_names(spec.image_pull_secrets)
    if spec.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise SpecError(
            f"invalid image pull policy {spec.image_pull_policy!r}: expected one of "
            "Always, IfNotPresent, Never"
        )


def _check_training(spec: JobSpec) -> None:
    """What the trainer is told: data, output, epochs, the global batch, extra args."""
    spec.gpus = to_int("gpus", spec.gpus, 0)
    spec.epochs = to_int("epochs", spec.epochs, 1)
    spec.batch_size = to_int("batch size", spec.batch_size, 1)
    spec.workers = to_int("workers", spec.workers, 1)
    if spec.batch_size % spec.replicas:
        raise SpecError(
            f"invalid batch size {spec.batch_size}: the global batch must divide evenly over "
            f"{spec.replicas} replicas ({spec.workers} workers x {max(spec.gpus, 1)} GPUs)"
        )
    spec.data = str(spec.data)
    if not spec.data.strip():
        raise SpecError("invalid data '': expected keras, a path, or gs://bucket/path")
    spec.output = str(spec.output or "")
    if not spec.output:
        raise SpecError(
            f"missing output: pass --output gs://BUCKET/PREFIX or set {contract.OUTPUT_ENV} "
            "(a bucket the trainer's service account can write; docs/kubernetes.md)"
        )
    check_output(spec.output)
    spec.extra_args = extra_args(spec.extra_args)
    # The trainer's own parser checks the whole command line now, not in the pod.
    check_trainer_args(spec.trainer_args())


def _check_placement(spec: JobSpec) -> None:
    """Node selector, tolerations and resources: where the pods may run."""
    spec.node_selector = node_selector(spec.node_selector)
    check_accelerator(spec)
    spec.tolerations = (
        ([dict(t) for t in GPU_TOLERATIONS] if spec.gpus else [])
        if spec.tolerations is None
        else tolerations(spec.tolerations)
    )
    for field in ("cpu", "cpu_limit", "memory", "memory_limit", "ephemeral_storage",
                  "tmp_size_limit", "cache_size_limit", "shm_size_limit"):  # fmt: skip
        setattr(spec, field, quantity(field.replace("_", " "), getattr(spec, field)))
    spec.pod_annotations = string_map("pod annotations", spec.pod_annotations, label=False)
    spec.pod_labels = string_map("pod labels", spec.pod_labels, label=True)
    spec.priority_class_name = str(spec.priority_class_name or "")
    spec.kueue_priority_class = str(spec.kueue_priority_class or "")
    for field in ("priority_class_name", "kueue_priority_class"):
        value = getattr(spec, field)
        if value and (not DNS_SUBDOMAIN.match(value) or len(value) > 253):
            raise SpecError(
                f"invalid {field.replace('_', ' ')} {value!r}: expected a DNS subdomain "
                "(lower-case letters, digits, '-' and '.')"
            )


def _check_lifecycle(spec: JobSpec) -> None:
    """Deadline, retries, TTL, the grace period after SIGTERM, the Kueue queue."""
    spec.active_deadline_seconds = optional_int(
        "active deadline seconds", spec.active_deadline_seconds, 1
    )
    spec.backoff_limit = to_int("backoff limit", spec.backoff_limit, 0)
    spec.peer_timeout = to_int("peer timeout", spec.peer_timeout, 1)
    spec.ttl_seconds_after_finished = optional_int(
        "ttl seconds after finished", spec.ttl_seconds_after_finished, 0
    )
    spec.termination_grace_period_seconds = to_int(
        "termination grace period seconds", spec.termination_grace_period_seconds, 0
    )
    spec.runtime = str(spec.runtime or RUNTIME_JOB)
    if spec.runtime not in RUNTIMES:
        raise SpecError(
            f"invalid runtime {spec.runtime!r}: expected {' or '.join(RUNTIMES)} (jobset "
            "needs the JobSet controller installed; docs/kubernetes.md)"
        )
    spec.queue = "" if spec.queue in (None, "") else str(spec.queue)
    if spec.queue and (not DNS_LABEL.match(spec.queue) or len(spec.queue) > MAX_NAME):
        raise SpecError(
            f"invalid queue {spec.queue!r}: expected a Kueue LocalQueue name (lower-case "
            "letters, digits and '-')"
        )


def _check_together(spec: JobSpec) -> None:
    """Settings valid one by one that the API server (or every GKE node) refuses together:
    a request above its limit, more GPUs than any node of the type has. (An Indexed Job's
    100,000 completions cannot be reached: the global batch, at most 65,536, divides over
    every replica.)"""
    from kubernetes.utils import parse_quantity  # the client's own reading of quantities

    for resource, request, limit in (("cpu", "cpu", "cpu_limit"),
                                     ("memory", "memory", "memory_limit")):  # fmt: skip
        req, lim = getattr(spec, request), getattr(spec, limit)
        if req and lim and parse_quantity(req) > parse_quantity(lim):
            raise SpecError(
                f"invalid --{request} {req} with --{limit.replace('_', '-')} {lim}: a "
                f"{resource} request must be at most its limit (the API server refuses "
                "the pod); raise the limit or lower the request"
            )
    counts = GKE_GPU_COUNTS.get(spec.accelerator)
    if spec.gpus and counts and spec.gpus > max(counts):
        raise SpecError(
            f"invalid --gpus {spec.gpus} with --accelerator {spec.accelerator}: its GKE "
            f"machine types have at most {max(counts)} GPUs per node, so the pod would fit "
            f"no node; expected one of {', '.join(map(str, counts))}"
        )
