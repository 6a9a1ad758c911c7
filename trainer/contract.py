"""The contract between jobs/, trainer/, bench/ and the chart: names, numbers and paths they share.

TensorFlow-free and dependency-free, so the submit side, the tests and the chart's
generator import it without the trainer's dependencies. Each value lives here once.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from typing import ClassVar

# --- models -------------------------------------------------------------------------------
# Model variants the trainer can build; trainer/models.py's registry must have exactly these.
MODELS: tuple[str, ...] = ("mean", "lstm")
# The model whose embedding neighbours are shown first: the mean model's vectors carry the
# sentiment directly, the LSTM's embedding is only its input layer.
NEIGHBOURS_MODEL = "mean"

# --- the encoding (keras.datasets.imdb's) and the reference recipe's sizes --------------------
PAD_ID = 0  # padding
START_CHAR = 1  # marks the start of every review
OOV_CHAR = 2  # a word outside the vocabulary
INDEX_FROM = 3  # a word of frequency rank r has id r + INDEX_FROM
VOCAB_SIZE = 5000  # ids kept: the most frequent VOCAB_SIZE - INDEX_FROM words
MAX_REVIEW_LENGTH = 100  # words per review after padding / truncating at the front
# The reference recipe (the exercise's): the trainer's, the Job's and the chart's defaults,
# and the base the fast profile scales its learning rate from.
EPOCHS = 3
BATCH_SIZE = 64  # GLOBAL: examples per optimizer step over all replicas
LEARNING_RATE = 1e-3  # Adam
# The data a run reads when none is named: Keras's imdb.npz, downloaded and verified.
DEFAULT_DATA = "keras"
SEED_FROM_RUN_ID = -1  # --seed -1: a seed derived from the run id (scheduled retraining)
# `<model>/latest` names the promoted run of a model (through <model>/latest.json).
LATEST_ALIAS = "latest"
# Keras 3 (default) or tf-keras ("1": multi-worker runs); read by TensorFlow at import.
LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"

# --- exit codes (the Kubernetes podFailurePolicy reads these) ------------------------------
EXIT_OK = 0
EXIT_CRASH = 1  # unexpected error: the Job's backoffLimit decides
EXIT_BAD_INPUT = 2  # permanent: retrying cannot help, the Job fails at once
# The loss became NaN or infinite (a learning rate the model cannot take): as permanent as
# bad input (a rerun resumes the last finite checkpoint and diverges again), told apart.
EXIT_DIVERGED = 3
# Exit codes that fail a Job at once (podFailurePolicy FailJob, a JobSet's FailJobSet).
PERMANENT_EXITS = (EXIT_BAD_INPUT, EXIT_DIVERGED)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: SIGTERM or a transient store fault; rerun to resume
# A worker that stopped only because another member of its group was signalled (preempted):
# not this pod's failure, so the Job's podFailurePolicy ignores it (bounded by the deadline),
# while a crash of a member still counts against backoffLimit.
EXIT_GROUP_STOPPED = 76
# The pod asked for GPUs (GPUS_ENV) and TensorFlow, a CUDA build, sees fewer: the node's
# driver or device plugin is broken or not ready. Not bad input (the same Job runs on a
# healthy node), so the Job retries it within backoffLimit (podFailurePolicy Count) instead
# of failing for good; a CPU-only TensorFlow in a GPU Job's image is bad input (exit 2).
EXIT_NO_GPU = 77
# A worker group that did not form within PEER_TIMEOUT_ENV (a peer Pending for a GPU node,
# or still pulling its image): no training was lost, so the Job does not count it against
# backoffLimit (podFailurePolicy Ignore; activeDeadlineSeconds bounds the waits).
EXIT_GROUP_NOT_FORMED = 78
# A command a person runs (jobs.*, predict): the cluster or the store refused, a watched Job
# failed, or a resumable stop of the trainer's kind happened to it (nothing reruns it).
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # Ctrl-C


class KnownError(Exception):
    """The one base of the errors a command reports as one line and an exit code (read by
    trainer.commandline.outcome), never a traceback; each subclass names its own code.

    `exit_code`: the process's exit code. `resumable`: the trainer stopped at a checkpoint
    and a rerun with the same run id resumes (a Job reruns it; a command a person runs
    reports it as a failure, EXIT_FAILED). `store_refusal`: a store that does not exist or
    refuses us, whose code each program chooses (bad input for the trainer and predict; the
    jobs.* commands document 1). A subclass sets what differs from its base.
    """

    exit_code: ClassVar[int] = EXIT_BAD_INPUT
    resumable: ClassVar[bool] = False
    store_refusal: ClassVar[bool] = False


# --- environment variables ----------------------------------------------------------------
OUTPUT_ENV = "IMDB_TRAIN_OUTPUT"  # default store of trainer, jobs.submit and jobs.results
IMAGE_ENV = "IMDB_TRAIN_IMAGE"  # default trainer image of jobs.submit (make image / make push)
# What trained a run: the image reference the pod ran (set in the pod by jobs.submit and the
# chart: Kubernetes has no downward API for it) and what the image says of itself.
IMAGE_REF_ENV = "IMDB_TRAIN_IMAGE_REF"
BUILD_INFO_PATH = "/opt/imdb-train/build.json"  # written by the Dockerfile
BUILD_INFO_ENV = "IMDB_TRAIN_BUILD_INFO"  # another path (tests)
ACCELERATOR_ENV = "IMDB_TRAIN_ACCELERATOR"  # default GPU type of jobs.submit (GPU Jobs need one)
CACHE_ENV = "IMDB_TRAIN_CACHE"  # where downloads and encoded data are cached
PROGRESS_ENV = "IMDB_TRAIN_PROGRESS"  # "0": no progress bars
VERBOSE_ENV = "IMDB_TRAIN_VERBOSE"  # "1": show TensorFlow's and Keras's own start-up lines
GCS_DEADLINE_ENV = "IMDB_TRAIN_GCS_DEADLINE"  # seconds of retries for one store call
RUN_ID_ENV = "IMDB_TRAIN_RUN_ID"  # set by the Job (scheduled runs: the pod's Job name)
WORKER_HOSTS_ENV = "IMDB_TRAIN_WORKER_HOSTS"  # comma list host:port, Indexed Job order
COLLECTIVE_TIMEOUT_ENV = "IMDB_TRAIN_COLLECTIVE_TIMEOUT"  # seconds; empty: none
# Seconds a worker waits for its whole group to form (every peer started and registered)
# before it exits 75, so a group whose peer stays Pending does not hold its GPUs; the Job
# then retries the group within its backoff limit.
PEER_TIMEOUT_ENV = "IMDB_TRAIN_PEER_TIMEOUT"
# 30 min: GKE scales a GPU pool up from zero in about 5-10 min (Autopilot or NAP can take
# longer when the zone is short of GPUs), installs the driver, then the pod pulls the 7 GB
# GPU image (a few minutes at 50 MB/s); a timeout costs no retry (EXIT_GROUP_NOT_FORMED).
PEER_TIMEOUT_DEFAULT = 1800
# What the pod asked for and where it runs, set by jobs/manifest.py: the trainer refuses
# fewer GPUs than GPUS_ENV says, and records the rest in metrics.json's cost.
GPUS_ENV = "IMDB_TRAIN_GPUS"  # nvidia.com/gpu of the trainer container's limits
NODE_NAME_ENV = "IMDB_TRAIN_NODE_NAME"  # downward API: spec.nodeName
# The node labels the pod selected (Kubernetes has no downward API for node labels; the
# node selector the Job sets is what the node has): GPU type and Spot.
NODE_ACCELERATOR_ENV = "IMDB_TRAIN_NODE_ACCELERATOR"
NODE_SPOT_ENV = "IMDB_TRAIN_NODE_SPOT"  # "true" when the pod selects Spot nodes
SPOT_LABEL = "cloud.google.com/gke-spot"  # GKE's label (and selector) of Spot nodes
LEASE_SECONDS_ENV = "IMDB_TRAIN_LEASE_SECONDS"  # a run's lease lifetime; renewed at a third
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in Indexed Job pods
# Ceiling on the bytes a data source may expand to (decompressed tarball, npz members):
# a gzip bomb stops with an error instead of exhausting memory. The IMDB tarball expands
# to about 100 MiB.
MAX_DATA_BYTES_ENV = "IMDB_TRAIN_MAX_DATA_BYTES"
# A fault point for tests: the trainer sends itself SIGTERM as the named phase ends
# (trainer.phases.ORDER), as a preemption landing there would.
SIGNAL_AT_ENV = "IMDB_TRAIN_FAULT_SIGNAL_AT"
MAX_DATA_BYTES_DEFAULT = 1 << 30

# --- ports -------------------------------------------------------------------------------
WORKER_PORT = 2222  # MultiWorkerMirroredStrategy's gRPC port in every worker pod
WORKER_PORT_NAME = "tf-worker"

# --- store layout --------------------------------------------------------------------------
# <output>/<model>/<run-id>/<artifact>, and <output>/<model>/latest.json.
DEFAULT_OUTPUT = "./runs"  # the local store when no --output and no $IMDB_TRAIN_OUTPUT


def default_output() -> str:
    """The store every command uses when none is given: $IMDB_TRAIN_OUTPUT, else ./runs."""
    return os.environ.get(OUTPUT_ENV) or DEFAULT_OUTPUT


LATEST = "latest.json"  # per model: the promoted run (moves by compare-and-swap)
SUCCESS = "_SUCCESS"  # written last, create-only: a run without it is incomplete
LEASE = "_LEASE"  # who trains the run now, until when (compare-and-swap, renewed)
CONFIG = "config.json"
METRICS = "metrics.json"
NEIGHBOURS = "neighbours.json"
MODEL_FILE = "model.keras"
WORD_INDEX = "word_index.json"
CURVES = "curves.png"
EMBEDDING_VECTORS = "embedding/vectors.tsv"
EMBEDDING_METADATA = "embedding/metadata.tsv"
SERVING_DIR = "serving"  # SavedModel: a batch of strings in, probabilities out
# TF Serving and KServe load numbered versions below a base path: serving/1/saved_model.pb.
SERVING_VERSION = "1"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
# The artifacts every complete run has (besides the directories).
RUN_FILES: tuple[str, ...] = (
    CONFIG,
    METRICS,
    NEIGHBOURS,
    MODEL_FILE,
    WORD_INDEX,
    CURVES,
    EMBEDDING_VECTORS,
    EMBEDDING_METADATA,
    SUCCESS,
)
# [0-9], not \d: \d matches any Unicode digit ('epoch-١٢٣٤' would be epoch 1234).
_CHECKPOINT_RE = re.compile(r"^checkpoints/epoch-([0-9]{4})\.keras\Z")


def checkpoint_key(epoch: int) -> str:
    """The checkpoint file of a completed epoch (weights and optimizer state)."""
    return f"{CHECKPOINT_DIR}/epoch-{epoch:04d}.keras"


def state_key(epoch: int) -> str:
    """The history and timings up to a completed epoch, saved beside its checkpoint."""
    return f"{CHECKPOINT_DIR}/state-{epoch:04d}.json"


def checkpoint_epoch(key: str) -> int | None:
    """The epoch of a checkpoint key, or None when the key is not a checkpoint."""
    m = _CHECKPOINT_RE.match(key)
    return int(m.group(1)) if m else None


ATTEMPTS_DIR = "attempts"  # one small record per trainer process of a run (metrics' cost)


def attempt_key(started: float, host: str) -> str:
    """The record of the trainer process that started at unix time `started` on `host`."""
    return f"{ATTEMPTS_DIR}/{started:017.6f}-{host}.json"


# A preempted epoch's checkpoint: taken on SIGTERM within the grace period, named by the epoch
# it belongs to (1-based, as the epoch's own checkpoint will be) and the steps of it done.
_IN_EPOCH_RE = re.compile(r"^checkpoints/epoch-([0-9]{4})-step-([0-9]{6})\.keras\Z")
_IN_EPOCH_STATE_RE = re.compile(r"^checkpoints/state-[0-9]{4}-step-[0-9]{6}\.json\Z")


def in_epoch_checkpoint_key(epoch: int, step: int) -> str:
    """The checkpoint of epoch `epoch` (1-based) cut short after `step` of its steps."""
    return f"{CHECKPOINT_DIR}/epoch-{epoch:04d}-step-{step:06d}.keras"


def in_epoch_state_key(epoch: int, step: int) -> str:
    """The history, timings and data position saved beside an in-epoch checkpoint."""
    return f"{CHECKPOINT_DIR}/state-{epoch:04d}-step-{step:06d}.json"


def in_epoch_position(key: str) -> tuple[int, int] | None:
    """(epoch, step) of an in-epoch checkpoint key, or None when the key is not one."""
    m = _IN_EPOCH_RE.match(key)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_in_epoch_key(key: str) -> bool:
    """An in-epoch checkpoint or its state file (superseded once its epoch completes)."""
    return bool(_IN_EPOCH_RE.match(key) or _IN_EPOCH_STATE_RE.match(key))


def run_key(model: str, run_id: str, artifact: str = "") -> str:
    """The key of a run (or of one of its artifacts) relative to the store root."""
    return "/".join(p for p in (model, run_id, artifact) if p)


# --- run ids -------------------------------------------------------------------------------
# A DNS label: a run id becomes part of Job names, pod hostnames and label values.
# `\Z`, not `$`: `$` also matches before a trailing newline.
RUN_ID_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
RUN_ID_HELP = "1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"


def new_run_id(now: datetime | None = None) -> str:
    """A run id unique per run: UTC timestamp plus 4 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def is_run_id(value: object) -> bool:
    """True when `value` is a string in the run-id format (safe as a path and a label)."""
    return isinstance(value, str) and RUN_ID_RE.match(value) is not None
