"""TrainConfig: the reference exercise's hyper-parameters as defaults, validated on creation."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

MODELS = ("mean", "lstm")
METRICS = ("euclidean", "cosine")
JIT_CHOICES = ("auto", "true", "false")
DEFAULT_QUERIES = ("great", "bad", "boring", "excellent")
DEFAULT_DATA = "keras"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

# Exit codes, part of the contract with the Kubernetes Job's podFailurePolicy.
EXIT_OK = 0
EXIT_CRASH = 1  # unexpected: the Job's backoffLimit decides
EXIT_BAD_INPUT = 2  # permanent: retrying cannot help, the Job fails at once
EXIT_RETRYABLE = 75  # EX_TEMPFAIL: preempted (SIGTERM) or a transient store fault; resume


class ConfigError(ValueError):
    """Bad input: the message names the value and what is valid."""


def _positive_int(name: str, value) -> int:
    try:
        as_int = int(value)
        ok = as_int == float(value) and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok or as_int <= 0:
        raise ConfigError(f"invalid {name} {value!r}: expected a positive integer")
    return as_int


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    `batch_size` is GLOBAL: each optimizer step consumes `batch_size` examples, split
    across replicas, so 64 keeps the reference's 64-examples-per-step semantics on any
    number of GPUs.
    """

    model: str = "lstm"
    data: str = DEFAULT_DATA
    output: str = "./runs"
    run_id: str = ""
    epochs: int = 3
    batch_size: int = 64
    vocab_size: int = 5000
    max_review_length: int = 100
    embedding_dim: int = 32
    lstm_units: int = 128
    learning_rate: float = 1e-3
    seed: int = 113
    sample: int = 0  # 0: all reviews; N: the first N of each split, for smoke tests
    neighbours: tuple[str, ...] = DEFAULT_QUERIES
    k: int = 10
    metric: str = "euclidean"
    cpu_devices: int = 0  # >0: split the CPU into N logical devices (multi-replica tests)
    promote: bool = True
    min_accuracy: float = 0.0
    tolerance: float = 0.005
    cache_dir: str = ""
    # Speed only: neither changes what is computed (measured in BENCHMARKS.md).
    steps_per_execution: int = 16  # batches per compiled call: less per-step overhead
    eval_batch_size: int = 1024  # GLOBAL batch of validation/test passes (no gradients)
    jit_compile: str = "auto"  # XLA: "auto" = Keras's choice, or "true"/"false"
    profile: str = "reference"  # recipe: "reference" or "fast" (trainer/profiles.py sets it)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = str(self.model)
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}: expected one of {', '.join(MODELS)}")
        for name in (
            "epochs",
            "batch_size",
            "vocab_size",
            "max_review_length",
            "embedding_dim",
            "lstm_units",
            "k",
            "steps_per_execution",
            "eval_batch_size",
        ):
            setattr(self, name, _positive_int(name.replace("_", "-"), getattr(self, name)))
        if self.vocab_size < 4:
            raise ConfigError(
                f"invalid vocab-size {self.vocab_size}: expected at least 4 "
                "(ids 0-2 are padding, start and out-of-vocabulary)"
            )
        try:
            self.sample = int(self.sample)
            self.cpu_devices = int(self.cpu_devices)
            self.seed = int(self.seed)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid integer option: {e}") from e
        if self.sample < 0:
            raise ConfigError(f"invalid sample {self.sample}: expected 0 (all) or a positive count")
        if self.cpu_devices < 0:
            raise ConfigError(f"invalid cpu-devices {self.cpu_devices}: expected 0 or more")
        self.jit_compile = str(self.jit_compile).lower()
        if self.jit_compile not in JIT_CHOICES:
            raise ConfigError(
                f"invalid jit-compile {self.jit_compile!r}: "
                f"expected one of {', '.join(JIT_CHOICES)}"
            )
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}: expected one of {', '.join(METRICS)}"
            )
        if isinstance(self.neighbours, str):
            self.neighbours = tuple(w.strip() for w in self.neighbours.split(",") if w.strip())
        else:
            self.neighbours = tuple(str(w) for w in self.neighbours)
        self.run_id = str(self.run_id)
        if self.run_id and not _RUN_ID_RE.match(self.run_id):
            raise ConfigError(
                f"invalid run-id {self.run_id!r}: expected 1-63 characters of letters, digits,"
                " '.', '_' or '-', starting with a letter or digit"
            )
        try:
            self.learning_rate = float(self.learning_rate)
            self.min_accuracy = float(self.min_accuracy)
            self.tolerance = float(self.tolerance)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid number: {e}") from e
        if not self.learning_rate > 0:
            raise ConfigError(f"invalid learning-rate {self.learning_rate}: expected > 0")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"invalid min-accuracy {self.min_accuracy}: expected 0..1")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ConfigError(f"invalid tolerance {self.tolerance}: expected 0..1")
        self.data = str(self.data)
        self.output = str(self.output)
        # Last: a profile overrides batch size, learning rate and epochs (trainer/profiles.py).
        from trainer import profiles

        if self.profile not in profiles.PROFILES:
            raise ConfigError(
                f"unknown profile {self.profile!r}: expected one of {', '.join(profiles.PROFILES)}"
            )
        profiles.apply(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["neighbours"] = list(self.neighbours)
        return d
