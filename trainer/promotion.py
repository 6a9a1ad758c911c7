"""Promotion: the quality gate, and moving `<output>/<model>/latest.json` by compare-and-swap."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import time

from trainer import contract
from trainer.config import ConfigError, TrainConfig
from trainer.numbers import bounded_float
from trainer.storage import NotFoundError, Store


class PointerError(ConfigError):
    """latest.json is not a pointer this project wrote: bad input, named, never overwritten."""


def _accuracy(value: object) -> bool:
    if isinstance(value, str):  # only a JSON number is an accuracy
        return False
    try:
        bounded_float(value, "test_accuracy", 0.0, 1.0)
    except ValueError:
        return False
    return True


def parse_pointer(raw: bytes | None, where: str, model: str | None = None) -> dict | None:
    """latest.json's content, checked: a dict with a valid run id and a test accuracy.

    The one reader of latest.json: the trainer's promotion, `jobs.results` and
    `trainer.predict` all go through it (its run_id becomes a path, so it must be one).

    Raises:
        PointerError: malformed JSON or a foreign document, naming `where`.
    """
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError included
        raise PointerError(f"{where} is not valid JSON ({e}); fix or remove it") from None
    except RecursionError:
        raise PointerError(
            f"{where} is nested too deeply to be a pointer; fix or remove it"
        ) from None
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        problem = f"expected a JSON object with run_id and test_accuracy, found a JSON {kind}"
    elif not contract.is_run_id(doc.get("run_id")):
        problem = f"run_id {doc.get('run_id')!r} is not a run id ({contract.RUN_ID_HELP})"
    elif not _accuracy(doc.get("test_accuracy")):
        # A number from a file we may not have written: NaN, Infinity or 1e308 would make
        # every comparison of the gate false.
        problem = f"test_accuracy {doc.get('test_accuracy')!r} is not a number from 0 to 1"
    elif model is not None and doc.get("model", model) != model:
        # A pointer copied from the other model's directory: its run (and accuracy) is not
        # one of this model's, so no gate or summary may compare against it.
        problem = f"it names a run of model {doc.get('model')!r}, not {model!r}"
    else:
        return doc
    raise PointerError(f"{where} is not a run pointer: {problem}; fix or remove it")


def read_latest(model_store: Store, model: str | None) -> dict | None:
    """The promoted run's pointer in a model's folder (`<output>/<model>/latest.json`),
    checked; None when no run of the model was promoted there.

    The one way to find a run through `latest`: `jobs.results` and `trainer.predict`.

    Raises:
        PointerError: latest.json is malformed, foreign, or names another model's run.
    """
    try:
        raw = model_store.read_bytes(contract.LATEST)
    except NotFoundError:
        return None
    return parse_pointer(raw, f"{model_store.uri}/{contract.LATEST}", model)


@dataclasses.dataclass(frozen=True)
class Promotion:
    """What promotion decided: whether `latest.json` names this run now, and why."""

    promoted: bool
    reason: str
    previous: dict | None = None  # the pointer it replaced or compared against

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def to_json(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def gate(cfg: TrainConfig, accuracy: float, current: dict | None) -> str | None:
    """Why a run with this test accuracy must not replace `current`, or None when it may.

    A run replaces the latest only when its accuracy is above the latest's minus the
    tolerance: with tolerance 0, a tie keeps the incumbent (scheduled retraining on
    unchanged data must not swap models for nothing, nor drift down).
    """
    if accuracy < cfg.min_accuracy:
        return f"test accuracy {accuracy:.4f} is below the floor {cfg.min_accuracy:.4f}"
    if current and accuracy <= float(current["test_accuracy"]) - cfg.tolerance:
        best = float(current["test_accuracy"])
        if cfg.tolerance == 0:
            return (
                f"test accuracy {accuracy:.4f} is not better than latest run "
                f"{current['run_id']} ({best:.4f}); a tie keeps the latest"
            )
        return (
            f"test accuracy {accuracy:.4f} is worse than latest run {current['run_id']} "
            f"({best:.4f}) by the tolerance {cfg.tolerance:.4f} or more"
        )
    return None


def promote(cfg: TrainConfig, metrics: dict, model_store: Store, attempts: int = 20) -> Promotion:
    """Move `<output>/<model>/latest.json` to this run if it passes the quality gate.

    The pointer moves by compare-and-swap, so of concurrent publishers each round has
    exactly one winner and no update is lost; losers re-read and re-judge.

    Raises:
        PointerError: latest.json is malformed or foreign; it is left as it is.
    """
    acc = float(metrics["test_accuracy"])
    for _ in range(attempts):
        raw, version = model_store.read_versioned(contract.LATEST)
        current = parse_pointer(raw, f"{model_store.uri}/{contract.LATEST}", cfg.model)
        if current and current.get("run_id") == cfg.run_id:
            return Promotion(True, "already the latest run", current)
        refused = gate(cfg, acc, current)
        if refused:
            return Promotion(False, refused, current)
        pointer = {
            "run_id": cfg.run_id,
            "model": cfg.model,
            "test_accuracy": acc,
            "test_loss": metrics.get("test_loss"),
            "uri": f"{model_store.uri}/{cfg.run_id}",
            "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "previous_run_id": current.get("run_id") if current else None,
        }
        if model_store.write_versioned(contract.LATEST, to_json(pointer), version):
            return Promotion(
                True,
                "first run"
                if not current
                else f"test accuracy {acc:.4f} vs {float(current['test_accuracy']):.4f}",
                current,
            )
        time.sleep(0.05 + secrets.randbelow(100) / 1000)
    return Promotion(False, f"{contract.LATEST} kept changing; gave up after {attempts} attempts")
