"""TrainConfig: every training option, its default, help and checks, in one place.

The trainer's command line is generated from these fields (trainer/flags.py), so a flag, its
default and its help exist once. Fields marked `resume=True` must match when a run id is
started again (trainer/train.py checks them); the others may differ between attempts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from trainer import commandline, contract
from trainer.contract import KnownError

METRICS = ("euclidean", "cosine")
JIT_CHOICES = ("auto", "true", "false")
DEFAULT_QUERIES = ("great", "bad", "boring", "excellent")
MIN_REVIEW_LENGTH = 5  # words kept per review; fewer cannot carry a review's sentiment


class ConfigError(KnownError):
    """Bad input: the message names the value and what is valid."""


def opt(default: Any, help: str, *, resume: bool = False, **kw: Any) -> Any:
    """A TrainConfig field: its default, its --help line, and whether a resume must match it."""
    return field(default=default, metadata={"help": help, "resume": resume, **kw})


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    `batch_size` is GLOBAL: each optimizer step consumes `batch_size` examples, split
    across replicas, so 64 keeps the reference's 64-examples-per-step semantics on any
    number of GPUs.
    """

    model: str = opt("lstm", f"the model: {' or '.join(contract.MODELS)}", resume=True)
    data: str = opt(
        contract.DEFAULT_DATA,
        "keras (official imdb.npz, downloaded and cached), a path or gs:// URI of imdb.npz, "
        "or an aclImdb tarball / directory (train|test/pos|neg/*.txt)",
        resume=True,
    )
    output: str = field(
        default_factory=contract.default_output,
        metadata={
            "help": "the store: a local path, file:///path or gs://bucket/prefix; runs land in "
            f"<output>/<model>/<run-id>/ (default: ${contract.OUTPUT_ENV} or "
            f"{contract.DEFAULT_OUTPUT})",
            "resume": False,
        },
    )
    run_id: str = opt("", "the run's name; the same id again resumes it (default: a timestamp)")
    epochs: int = opt(contract.EPOCHS, "training epochs", resume=True)
    batch_size: int = opt(
        contract.BATCH_SIZE,
        "GLOBAL batch size: examples per optimizer step over all replicas",
        resume=True,
    )
    vocab_size: int = opt(
        contract.VOCAB_SIZE,
        "the most frequent words kept (others become out-of-vocabulary)",
        resume=True,
    )
    max_review_length: int = opt(
        contract.MAX_REVIEW_LENGTH,
        "reviews are truncated / zero-padded at the front to this many words",
        resume=True,
    )
    embedding_dim: int = opt(32, "word vector size", resume=True)
    lstm_units: int = opt(128, "LSTM width (lstm model only)", resume=True)
    learning_rate: float = opt(contract.LEARNING_RATE, "Adam learning rate", resume=True)
    seed: int = opt(
        113,
        "random seed (weights, shuffling); -1: derived from the run id, so every scheduled "
        "run differs and its seed is recorded in config.json",
        resume=True,
    )
    sample: int = opt(
        0, "0: all reviews; N: only the first N of each split (smoke runs)", resume=True
    )
    neighbours: tuple[str, ...] = opt(
        DEFAULT_QUERIES, "comma-separated query words for the nearest-neighbour lists"
    )
    k: int = opt(10, "neighbours per query word")
    metric: str = opt("euclidean", f"neighbour distance: {' or '.join(METRICS)}")
    cpu_devices: int = opt(0, "without a GPU, mirror over this many logical CPU devices (tests)")
    promote: bool = opt(True, "move <output>/<model>/latest.json to this run if it passes the gate")
    min_accuracy: float = opt(0.0, "promotion floor on test accuracy (0..1)")
    tolerance: float = opt(
        0.005,
        "promotion needs more than the current latest's accuracy minus this (0..1; 0: only a "
        "better run replaces it, a tie keeps it)",
    )
    cache_dir: str = opt(
        "",
        f"downloads and encoded data are cached here (default: ${contract.CACHE_ENV} or "
        "~/.cache/imdb-train)",
    )
    # Speed only: none of these changes what is computed (measured in BENCHMARKS.md).
    steps_per_execution: int = opt(
        16, "batches per compiled call (speed only; SIGTERM is noticed between calls)"
    )
    eval_batch_size: int = opt(
        1024, "GLOBAL batch size of the validation and test passes (speed only)"
    )
    jit_compile: str = opt(
        "auto", "XLA: auto (Keras's choice: off on CPU), true or false (speed only)"
    )
    profile: str = opt(
        "reference",
        "recipe: reference (the exercise's hyper-parameters) or fast (its accuracy sooner: a "
        "larger batch, warm-up and decay, early stopping on a share of the training set); "
        "fast sets batch size, learning rate and epochs (trainer/profiles.py)",
    )

    def __post_init__(self) -> None:
        from trainer import profiles

        self.model = _choice("model", self.model, contract.MODELS)
        self.metric = _choice("metric", self.metric, METRICS)
        self.jit_compile = _choice("jit-compile", str(self.jit_compile).lower(), JIT_CHOICES)
        self.profile = _choice("profile", self.profile, profiles.PROFILES)
        self._check_numbers()
        self._check_words()
        self._check_run()
        # The profile is resolved once, by the run (profiles.resolve): these fields stay
        # what was asked for.

    def _check_numbers(self) -> None:
        """Sizes, counts and rates: integers and floats in their ranges, whatever the CLI
        or a JSON config handed over (10, "10" or 10.0)."""
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
            setattr(self, name, _int(name, getattr(self, name), minimum=1))
        for name in ("sample", "cpu_devices"):
            setattr(self, name, _int(name, getattr(self, name), minimum=0))
        self.seed = _int("seed", self.seed, minimum=contract.SEED_FROM_RUN_ID)
        for name in ("learning_rate", "min_accuracy", "tolerance"):
            setattr(self, name, _float(name, getattr(self, name)))
        if not self.learning_rate > 0:
            raise ConfigError(f"invalid learning-rate {self.learning_rate}: expected > 0")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"invalid min-accuracy {self.min_accuracy}: expected 0..1")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ConfigError(f"invalid tolerance {self.tolerance}: expected 0..1")

    def _check_words(self) -> None:
        """The vocabulary, review length and neighbour queries fit one another."""
        if self.vocab_size < 4:
            raise ConfigError(
                f"invalid vocab-size {self.vocab_size}: expected at least 4 "
                "(ids 0-2 are padding, start and out-of-vocabulary)"
            )
        words = self.vocab_size - 3  # ids 0-2 are padding, start and out-of-vocabulary
        if self.k > words:
            raise ConfigError(
                f"invalid k {self.k}: expected at most {words}, the words a vocabulary of "
                f"{self.vocab_size} holds"
            )
        if self.max_review_length < MIN_REVIEW_LENGTH:
            raise ConfigError(
                f"invalid max-review-length {self.max_review_length}: expected at least "
                f"{MIN_REVIEW_LENGTH} (a review truncated to fewer words carries no sentiment)"
            )
        if isinstance(self.neighbours, str):
            self.neighbours = tuple(w.strip() for w in self.neighbours.split(",") if w.strip())
        else:
            self.neighbours = tuple(str(w) for w in self.neighbours)

    def _check_run(self) -> None:
        """The run's name, where it goes and whether it may be promoted."""
        if not isinstance(self.run_id, str) or (
            self.run_id and not contract.is_run_id(self.run_id)
        ):
            raise ConfigError(f"invalid run-id {self.run_id!r}: expected {contract.RUN_ID_HELP}")
        if not isinstance(self.promote, bool):
            raise ConfigError(f"invalid promote {self.promote!r}: expected true or false")
        self.data = str(self.data)
        if not self.data.strip():
            raise ConfigError(
                "invalid data '': expected keras, a path to imdb.npz or an aclImdb tarball or "
                "directory, or gs://bucket/path"
            )
        self.output = str(self.output)

    def resolve_seed(self) -> None:
        """Replace --seed -1 by a seed derived from the run id (same id, same seed: a
        resumed run keeps its seed)."""
        if self.seed == contract.SEED_FROM_RUN_ID and self.run_id:
            digest = hashlib.sha256(self.run_id.encode()).hexdigest()
            self.seed = int(digest[:8], 16) % 2**31

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["neighbours"] = list(self.neighbours)
        return d


def resume_keys() -> tuple[str, ...]:
    """The fields that must match when a run id is started again."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resume"))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}")
    return str(value)


# What the math and the machine can take: a larger value fails after the data load (numpy
# seeds are 32-bit; a review of a billion words or a vocabulary of a billion rows does not
# fit any accelerator), so it is bad input, refused before any work.
MAXIMA = {
    "seed": 2**32 - 1,
    "max_review_length": 10_000,
    "vocab_size": 1_000_000,
    "embedding_dim": 4096,
    "lstm_units": 4096,
    "batch_size": 65_536,
    "eval_batch_size": 65_536,
    "epochs": 10_000,
    "steps_per_execution": 100_000,
    "cpu_devices": 256,
}


def _int(name: str, value: Any, minimum: int) -> int:
    # fire and JSON hand over 10, "10" or 10.0; a bool or 10.5 is a mistake.
    as_int = commandline.as_int(value)
    if as_int is None or as_int < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(
            f"invalid {commandline.option_name(name)} {_show(value)}: expected {what}"
        )
    maximum = MAXIMA.get(name)
    if maximum is not None and as_int > maximum:
        raise ConfigError(
            f"invalid {commandline.option_name(name)} {_show(value)}: expected at most {maximum}"
        )
    return as_int


def _float(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"invalid {commandline.option_name(name)} {_show(value)}: expected a number"
        ) from None


def _show(value: Any) -> str:
    """A value as the user typed it: numbers bare, anything else quoted."""
    if isinstance(value, str):
        try:
            float(value)
            return value
        except ValueError:
            return repr(value)
    return repr(value)
