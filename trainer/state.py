"""RunState: what a run has accumulated so far, saved beside each checkpoint; InEpoch: where
a preempted epoch stopped."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class InEpoch:
    """Where an epoch cut short by SIGTERM stopped: enough to go on from its next step with
    the examples an uninterrupted run would have seen, in the same order."""

    epoch: int  # epochs completed before it: the 0-based index of the epoch cut short
    step: int  # its steps done (optimizer updates)
    steps: int  # its steps in all
    position: int  # batches of the training stream used since the run began
    seconds: float  # its training seconds so far
    examples: int  # its training examples so far: the weight of `logs` when merged
    logs: dict[str, float] = field(default_factory=dict)  # its running train metrics

    def merged(self, logs: dict, examples: int) -> dict:
        """The whole epoch's logs from the rest of it (`logs` over `examples` examples):
        Keras's train metrics are means over examples, so the two parts weigh by theirs."""
        out = dict(logs)
        total = self.examples + examples
        for k, v in self.logs.items():
            if k in out and total:
                out[k] = (v * self.examples + float(out[k]) * examples) / total
        return out


@dataclass
class RunState:
    """Per-epoch history (Keras's logs) and timings; a resumed run continues from it."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    in_epoch: InEpoch | None = None  # set in an in-epoch checkpoint's state only

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
        if not isinstance(doc, dict):
            raise TypeError(f"a checkpoint state is a JSON object, not {type(doc).__name__}")
        part = doc.get("in_epoch")
        return cls(
            history=dict(doc["history"]),
            epoch_seconds=list(doc["epoch_seconds"]),
            in_epoch=InEpoch(**part) if part is not None else None,
        )

    def curves(self) -> dict[str, list[float]]:
        return {k: self.history.get(k, []) for k in HISTORY_KEYS}
