"""JobSpec: everything needed to build one trainer Job, validated where it is made."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from trainer import commandline, contract
from trainer.contract import DEFAULT_DATA, MODELS, WORKER_PORT, new_run_id
from trainer.errors import KnownError

VERSION = "0.1.0"
"""The app version: chart appVersion, the image tag and the `app.kubernetes.io/version` label."""

MODEL_CHOICES = (*MODELS, "all")

DEFAULT_NAME = "imdb-train"
# Placeholders of the example manifests in k8s/ (jobs.render); a real submission names its own.
EXAMPLE_IMAGE = f"imdb-train:{VERSION}"
DEFAULT_NAMESPACE = "default"
EXAMPLE_OUTPUT = "gs://imdb-train-runs/imdb"
DEFAULT_SERVICE_ACCOUNT = "imdb-train"
# The GPU type of a GPU Job, as the node selector GKE reads: Autopilot refuses GPU pods
# without it, and on Standard with several GPU pools it picks the pool. Required with GPUs.
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# GKE's accelerator names known to this version. GKE adds GPUs faster than releases come, so
# another name of the same form is used as given, with a warning naming these (a typo shows
# as a Pending pod whose event names the selector); the chart's schema takes the same form.
GKE_ACCELERATORS = (
    "nvidia-gb200",
    "nvidia-b200",
    "nvidia-h200-141gb",
    "nvidia-h100-mega-80gb",
    "nvidia-h100-80gb",
    "nvidia-a100-80gb",
    "nvidia-tesla-a100",
    "nvidia-l4",
    "nvidia-rtx-pro-6000",
    "nvidia-tesla-t4",
    "nvidia-tesla-v100",
    "nvidia-tesla-p100",
    "nvidia-tesla-p4",
)
EXAMPLE_ACCELERATOR = "nvidia-l4"
# The form of a GKE accelerator name: a label value, nvidia-<model>.
ACCELERATOR_RE = re.compile(r"nvidia-[a-z0-9]([-a-z0-9]{0,54}[a-z0-9])?\Z")
# GPU node pools are usually tainted so that only pods asking for GPUs land there.
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
]
# GPUs per node of each GKE GPU type, as its machine types come (g2-standard: 1-8 L4s,
# a3-megagpu-8g: 8 H100s, ...): a pod asking for more than the largest fits no node (it
# stays Pending), so jobs.submit refuses it. A count between them fits a larger node on
# Standard (whose other GPUs other pods use); Autopilot takes only these counts, but
# jobs.submit cannot tell Autopilot (jobs.doctor can). A GPU type not listed is not checked.
GKE_GPU_COUNTS: dict[str, tuple[int, ...]] = {
    "nvidia-gb200": (4,),
    "nvidia-b200": (8,),
    "nvidia-h200-141gb": (8,),
    "nvidia-h100-mega-80gb": (8,),
    "nvidia-h100-80gb": (1, 2, 4, 8),
    "nvidia-a100-80gb": (1, 2, 4, 8),
    "nvidia-tesla-a100": (1, 2, 4, 8, 16),
    "nvidia-l4": (1, 2, 4, 8),
    "nvidia-rtx-pro-6000": (1, 2, 4, 8),
    "nvidia-tesla-t4": (1, 2, 4),
    "nvidia-tesla-v100": (1, 2, 4, 8),
    "nvidia-tesla-p100": (1, 2, 4),
    "nvidia-tesla-p4": (1, 2, 4),
}

MAX_NAME = 63  # a Job name becomes a label value and, for indexed pods, a hostname prefix

# How a run's pods are made: a plain (Indexed, for a worker group) Job, which needs nothing
# installed, or a JobSet (jobset.x-k8s.io), whose failure policy restarts the whole group.
RUNTIME_JOB = "job"
RUNTIME_JOBSET = "jobset"
RUNTIMES = (RUNTIME_JOB, RUNTIME_JOBSET)
# The JobSet's one replicated Job; its pods are <jobset>-worker-0-<index>.<jobset>.
JOBSET_REPLICATED_JOB = "worker"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUANTITY = re.compile(r"(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?\Z")
# The OCI distribution reference grammar: [host[:port]/]path[:tag][@digest], lower-case path
# components separated by . _ __ or dashes, a tag of at most 128 word characters.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?"
_IMAGE = re.compile(
    rf"{_HOST}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?\Z"
)
# Label keys and values as the API server checks them: [prefix/]name, a DNS subdomain prefix
# of at most 253 characters, a name (and a value) of at most 63 alphanumerics, - _ or .
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def jobset_child_job(jobset: str) -> str:
    """The Job a JobSet of ours makes (its pods: <job>-<index>)."""
    return f"{jobset}-{JOBSET_REPLICATED_JOB}-0"


class SpecError(KnownError):
    """Bad input to a Job spec: the message names the flag, the value and what is valid."""


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


def to_int(field: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum, whatever fire made of the flag; else a SpecError naming it."""
    # fire hands over whatever the flag looked like: 10, "10", 10.0 or True.
    as_int = commandline.as_int(value)
    if as_int is None or as_int < minimum:
        raise SpecError(f"invalid {field} {value!r}: expected an integer >= {minimum}")
    return as_int


def _optional_int(field: str, value: Any, minimum: int) -> int | None:
    return None if value is None or value == "" else to_int(field, value, minimum)


def _quantity(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SpecError(
            f"invalid {field} {value!r}: expected a Kubernetes quantity like 4, 500m, 16Gi"
        )
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not _QUANTITY.match(text):
        raise SpecError(
            f"invalid {field} {value!r}: expected a Kubernetes quantity like 4, 500m, 16Gi"
        )
    return text


def _json(flag: str, text: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise SpecError(f"invalid {flag} {text!r}: not JSON ({e}); expected {expected}") from None


def _string_map(what: str, value: Any, *, label: bool) -> dict[str, str]:
    """key=value[,key=value] or a JSON object; keys are label keys, and so are values when
    `label` (a node selector, pod labels; annotation values are free text)."""
    flag = "--" + what.replace(" ", "-")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = _json(flag, text, "key=value[,key=value] or a JSON object")
        else:
            pairs = [p for p in text.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise SpecError(
                    f"invalid {what} {text!r}: expected key=value[,key=value] or a JSON object"
                )
            value = dict(p.strip().split("=", 1) for p in pairs)
    if not isinstance(value, Mapping):
        raise SpecError(
            f"invalid {what} {value!r}: expected key=value[,key=value] or a JSON object"
        )
    out = {str(k): str(v) for k, v in value.items()}
    for key, val in out.items():
        if not _label_key(key):
            raise SpecError(
                f"invalid {what} key {key!r}: expected a label key, [prefix/]name "
                "(name: at most 63 letters, digits, '-', '_' or '.'; prefix: a DNS subdomain)"
            )
        if label and not _LABEL_NAME.match(val):
            raise SpecError(
                f"invalid {what} value {val!r} for {key}: expected at most 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    return out


def _secret_names(value: Any) -> tuple[str, ...]:
    """Pull secrets: comma-separated names, a list of names, or the chart's [{name: ...}]."""
    if isinstance(value, str):
        text = value.strip()
        value = (_json("--image-pull-secrets", text, "names or a JSON list")
                 if text.startswith("[") else text.split(","))  # fmt: skip
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        value = [value]
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, Mapping) else item
        name = str(name).strip() if name is not None else ""
        if not name:
            continue
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise SpecError(
                f"invalid image pull secret {name!r}: expected a Secret name (lower-case "
                "letters, digits, '-' and '.')"
            )
        names.append(name)
    return tuple(names)


def _node_selector(value: Any) -> dict[str, str]:
    return _string_map("node selector", value, label=True)


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if not name or not _LABEL_NAME.match(name):
        return False
    return not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix)))


def _tolerations(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = (
            _json("--tolerations", value, "a JSON list of toleration objects")
            if value.strip()
            else []
        )
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(t, Mapping) for t in value):
        raise SpecError(
            f"invalid tolerations {value!r}: expected a JSON list of objects with "
            f"{', '.join(sorted(_TOLERATION_KEYS))}"
        )
    for t in value:
        unknown = set(t) - _TOLERATION_KEYS
        if unknown:
            raise SpecError(
                f"invalid toleration key {sorted(unknown)[0]!r}: expected one of "
                f"{', '.join(sorted(_TOLERATION_KEYS))}"
            )
        operator = t.get("operator", "Equal")
        if operator not in _TOLERATION_OPERATORS:
            raise SpecError(f"invalid toleration operator {operator!r}: expected Equal or Exists")
        if operator == "Exists" and t.get("value"):
            raise SpecError(f"invalid toleration {dict(t)}: operator Exists takes no value")
        effect = t.get("effect")
        if effect not in (None, "", *_TAINT_EFFECTS):
            raise SpecError(
                f"invalid toleration effect {effect!r}: expected {', '.join(_TAINT_EFFECTS)}"
            )
        if t.get("key") and not _label_key(str(t["key"])):
            raise SpecError(f"invalid toleration key value {t['key']!r}: expected a label key")
    return [dict(t) for t in value]


def _check_output(output: str) -> None:
    # Imported here so that importing jobs.spec stays cheap; storage imports no TensorFlow.
    from trainer.storage import StoreError, open_store

    if not (output.startswith("gs://") or output.startswith("file:///") or output.startswith("/")):
        raise SpecError(
            f"invalid output {output!r}: expected gs://bucket/prefix or an absolute path on a "
            "volume mounted into the pod"
        )
    try:
        open_store(output)
    except StoreError as e:
        raise SpecError(f"invalid output {output!r}: {e}") from e


# Trainer flags the spec sets itself; --extra-args may not repeat them (the Job's name and
# labels say which model and run it is, so an override would make them lie).
OWNED_TRAINER_FLAGS = ("--model", "--data", "--output", "--run-id", "--epochs", "--batch-size")


def _extra_args(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise SpecError(
            f"invalid extra args {value!r}: expected a list of trainer arguments, "
            'e.g. --extra-args=\'["--promote", "false"]\''
        )
    args = tuple(str(a) for a in value)
    for arg in args:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in OWNED_TRAINER_FLAGS:
            raise SpecError(
                f"invalid extra args {list(args)!r}: {flag} is set by jobs.submit itself; pass "
                f"--{flag[2:]} to jobs.submit instead"
            )
    return args


def check_trainer_args(args: Sequence[str]) -> None:
    """Parse a trainer command line with the trainer's own config, as the pod will.

    Raises:
        SpecError: an unknown flag or a bad value, named as the trainer would name it.
    """
    # TrainConfig and its parser are TensorFlow-free.
    from trainer.config import ConfigError
    from trainer.flags import config_from_args

    placeholder = f"$({contract.RUN_ID_ENV})"
    args = [a if a != placeholder else new_run_id() for a in args]
    try:
        config_from_args(args)
    except ConfigError as e:
        raise SpecError(f"invalid trainer arguments: {e}") from None


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
        self._check_identity()
        self._check_training()
        self._check_placement()
        self._check_lifecycle()
        self._check_together()
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

    def _check_identity(self) -> None:
        """Model, run id, names and image: what the Job is called and runs."""
        if self.model not in MODELS:
            raise SpecError(f"invalid model {self.model!r}: expected one of {', '.join(MODELS)}")
        self.run_id = new_run_id() if self.run_id in (None, "") else self.run_id
        if isinstance(self.run_id, int) and not isinstance(self.run_id, bool):
            self.run_id = str(self.run_id)  # fire reads --run-id 123 as an int
        if not contract.is_run_id(self.run_id):
            raise SpecError(f"invalid run id {self.run_id!r}: expected {contract.RUN_ID_HELP}")
        self.namespace = self.namespace or DEFAULT_NAMESPACE  # jobs.submit resolved it
        for field in ("namespace", "name", "service_account"):
            value = str(getattr(self, field))
            if not _DNS_LABEL.match(value) or len(value) > MAX_NAME:
                raise SpecError(
                    f"invalid {field.replace('_', ' ')} {value!r}: expected a DNS label "
                    "(lower-case letters, digits and '-', at most 63 characters)"
                )
            setattr(self, field, value)
        self.image = str(self.image or "")
        if not self.image:
            raise SpecError(
                f"missing image: pass --image REGISTRY/imdb-train:TAG or set {contract.IMAGE_ENV}; "
                "build and push it with `make image push IMAGE=REGISTRY/imdb-train:TAG` "
                "(docs/kubernetes.md)"
            )
        if not _IMAGE.match(self.image):
            raise SpecError(
                f"invalid image {self.image!r}: expected a reference like "
                "[registry/]repo/name[:tag][@sha256:digest] (lower-case repository path)"
            )
        self.image_pull_secrets = _secret_names(self.image_pull_secrets)
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SpecError(
                f"invalid image pull policy {self.image_pull_policy!r}: expected one of "
                "Always, IfNotPresent, Never"
            )

    def _check_training(self) -> None:
        """What the trainer is told: data, output, epochs, the global batch, extra args."""
        self.gpus = to_int("gpus", self.gpus, 0)
        self.epochs = to_int("epochs", self.epochs, 1)
        self.batch_size = to_int("batch size", self.batch_size, 1)
        self.workers = to_int("workers", self.workers, 1)
        if self.batch_size % self.replicas:
            raise SpecError(
                f"invalid batch size {self.batch_size}: the global batch must divide evenly over "
                f"{self.replicas} replicas ({self.workers} workers x {max(self.gpus, 1)} GPUs)"
            )
        self.data = str(self.data)
        if not self.data.strip():
            raise SpecError("invalid data '': expected keras, a path, or gs://bucket/path")
        self.output = str(self.output or "")
        if not self.output:
            raise SpecError(
                f"missing output: pass --output gs://BUCKET/PREFIX or set {contract.OUTPUT_ENV} "
                "(a bucket the trainer's service account can write; docs/kubernetes.md)"
            )
        _check_output(self.output)
        self.extra_args = _extra_args(self.extra_args)
        # The trainer's own parser checks the whole command line now, not in the pod.
        check_trainer_args(self.trainer_args())

    def _check_placement(self) -> None:
        """Node selector, tolerations and resources: where the pods may run."""
        self.node_selector = _node_selector(self.node_selector)
        self._check_accelerator()
        self.tolerations = (
            ([dict(t) for t in GPU_TOLERATIONS] if self.gpus else [])
            if self.tolerations is None
            else _tolerations(self.tolerations)
        )
        for field in ("cpu", "cpu_limit", "memory", "memory_limit", "ephemeral_storage",
                      "tmp_size_limit", "cache_size_limit", "shm_size_limit"):  # fmt: skip
            setattr(self, field, _quantity(field.replace("_", " "), getattr(self, field)))
        self.pod_annotations = _string_map("pod annotations", self.pod_annotations, label=False)
        self.pod_labels = _string_map("pod labels", self.pod_labels, label=True)
        self.priority_class_name = str(self.priority_class_name or "")
        self.kueue_priority_class = str(self.kueue_priority_class or "")
        for field in ("priority_class_name", "kueue_priority_class"):
            value = getattr(self, field)
            if value and (not _DNS_SUBDOMAIN.match(value) or len(value) > 253):
                raise SpecError(
                    f"invalid {field.replace('_', ' ')} {value!r}: expected a DNS subdomain "
                    "(lower-case letters, digits, '-' and '.')"
                )

    def _check_accelerator(self) -> None:
        """A GPU Job names its GPU type; it becomes the node selector GKE requires."""
        if not self.gpus:
            self.accelerator = ""  # a CPU Job has none (an IMDB_TRAIN_ACCELERATOR default too)
            return
        acc = "" if self.accelerator in (None, "") else str(self.accelerator)
        choices = ", ".join(GKE_ACCELERATORS)
        if not acc:
            raise SpecError(
                f"missing accelerator for --gpus {self.gpus}: pass --accelerator TYPE or set "
                f"{contract.ACCELERATOR_ENV} (one of {choices}); GPU Jobs need the GPU type "
                f"as the node selector {ACCELERATOR_LABEL} (GKE Autopilot refuses GPU pods "
                "without it), or --gpus 0"
            )
        if not ACCELERATOR_RE.match(acc):
            raise SpecError(
                f"invalid accelerator {acc!r}: expected a GKE GPU type nvidia-<model>, e.g. "
                f"one of {choices}"
            )
        if acc not in GKE_ACCELERATORS:
            print(
                f"warning: accelerator {acc!r} is not one this version knows ({choices}); "
                f"using it as the node selector {ACCELERATOR_LABEL}={acc}: check the spelling "
                "if the pod stays Pending",
                file=sys.stderr,
            )
        given = self.node_selector.get(ACCELERATOR_LABEL)
        if given not in (None, acc):
            raise SpecError(
                f"--node-selector {ACCELERATOR_LABEL}={given} contradicts --accelerator {acc}"
            )
        self.accelerator = acc
        self.node_selector = {**self.node_selector, ACCELERATOR_LABEL: acc}

    def _check_lifecycle(self) -> None:
        """Deadline, retries, TTL, the grace period after SIGTERM, the Kueue queue."""
        self.active_deadline_seconds = _optional_int(
            "active deadline seconds", self.active_deadline_seconds, 1
        )
        self.backoff_limit = to_int("backoff limit", self.backoff_limit, 0)
        self.peer_timeout = to_int("peer timeout", self.peer_timeout, 1)
        self.ttl_seconds_after_finished = _optional_int(
            "ttl seconds after finished", self.ttl_seconds_after_finished, 0
        )
        self.termination_grace_period_seconds = to_int(
            "termination grace period seconds", self.termination_grace_period_seconds, 0
        )
        self.runtime = str(self.runtime or RUNTIME_JOB)
        if self.runtime not in RUNTIMES:
            raise SpecError(
                f"invalid runtime {self.runtime!r}: expected {' or '.join(RUNTIMES)} (jobset "
                "needs the JobSet controller installed; docs/kubernetes.md)"
            )
        self.queue = "" if self.queue in (None, "") else str(self.queue)
        if self.queue and (not _DNS_LABEL.match(self.queue) or len(self.queue) > MAX_NAME):
            raise SpecError(
                f"invalid queue {self.queue!r}: expected a Kueue LocalQueue name (lower-case "
                "letters, digits and '-')"
            )

    def _check_together(self) -> None:
        """Settings valid one by one that the API server (or every GKE node) refuses together:
        a request above its limit, more GPUs than any node of the type has. (An Indexed Job's
        100,000 completions cannot be reached: the global batch, at most 65,536, divides over
        every replica.)"""
        from kubernetes.utils import parse_quantity  # the client's own reading of quantities

        for resource, request, limit in (("cpu", "cpu", "cpu_limit"),
                                         ("memory", "memory", "memory_limit")):  # fmt: skip
            req, lim = getattr(self, request), getattr(self, limit)
            if req and lim and parse_quantity(req) > parse_quantity(lim):
                raise SpecError(
                    f"invalid --{request} {req} with --{limit.replace('_', '-')} {lim}: a "
                    f"{resource} request must be at most its limit (the API server refuses "
                    "the pod); raise the limit or lower the request"
                )
        counts = GKE_GPU_COUNTS.get(self.accelerator)
        if self.gpus and counts and self.gpus > max(counts):
            raise SpecError(
                f"invalid --gpus {self.gpus} with --accelerator {self.accelerator}: its GKE "
                f"machine types have at most {max(counts)} GPUs per node, so the pod would fit "
                f"no node; expected one of {', '.join(map(str, counts))}"
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
