"""Wall-clock marks of one trainer process, in metrics.json: where time to accuracy goes."""

from __future__ import annotations

import os
import signal
import time

from trainer.contract import SIGNAL_AT_ENV

# The marks, in order, each the unix time a phase ended: "started" is this module's import
# (the first thing the entrypoint does); the data is read and checked before TensorFlow
# is imported (bad input fails fast); "strategy_ready" includes a worker group's meeting,
# "model_ready" the run's lease, its config and datasets and the model (built or restored).
# A resumed run records its last process only.
ORDER = (
    "started",
    "data_loaded",
    "tensorflow_imported",
    "strategy_ready",
    "model_ready",
    "trained",
    "tested",
)
marks: dict[str, float] = {"started": time.time()}


def mark(name: str) -> None:
    if name not in ORDER:
        raise ValueError(f"unknown phase {name!r}: expected one of {', '.join(ORDER)}")
    marks[name] = time.time()
    if os.environ.get(SIGNAL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGTERM)
