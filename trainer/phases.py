"""Wall-clock marks of one trainer process, in metrics.json: where time to accuracy goes."""

from __future__ import annotations

import time

# Unix times by phase end, in order: "started" (this module imported, first thing the
# entrypoint does), "tensorflow_imported", "data_loaded", "strategy_ready", "model_ready",
# "trained", "tested". A resumed run records its last process only.
marks: dict[str, float] = {"started": time.time()}


def mark(name: str) -> None:
    marks[name] = time.time()
