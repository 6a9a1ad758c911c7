"""RunState: what a run has accumulated so far, saved beside each checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class RunState:
    """Per-epoch history (Keras's logs) and timings; a resumed run continues from it."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def epochs_completed(self) -> int:
        return len(self.epoch_seconds)

    def add_epoch(self, seconds: float, logs: dict) -> None:
        self.epoch_seconds.append(round(seconds, 3))
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunState:
        doc = json.loads(raw)
        return cls(history=dict(doc["history"]), epoch_seconds=list(doc["epoch_seconds"]))

    def curves(self) -> dict[str, list[float]]:
        return {k: self.history.get(k, []) for k in HISTORY_KEYS}
