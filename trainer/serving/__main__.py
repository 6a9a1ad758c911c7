"""`python -m trainer.serving --run RUN`: write `serving/` for a run trained before runs
wrote it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from trainer import quiet
from trainer.commandline import run_fire
from trainer.contract import SERVING_DIR, SERVING_VERSION
from trainer.runs import load_run
from trainer.serving import export
from trainer.storage import upload_tree


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.serving --run RUN`: write `serving/` for an existing run."""

    def run(run: str = "") -> None:
        """Export the serving SavedModel of a finished run into the run's `serving/`.

        Args:
            run: a run directory or URI (local path, file://, gs://); `<model>/latest`
                resolves through `<model>/latest.json`.
        """
        with quiet.quietly():
            loaded = load_run(run)
            with tempfile.TemporaryDirectory(prefix="imdb-serving-") as tmp:
                export(loaded.model, loaded.word_index, loaded, Path(tmp), loaded.index_from)
                upload_tree(loaded.store, Path(tmp), SERVING_DIR)
        print(f"serving: {loaded.store.uri}/{SERVING_DIR}/{SERVING_VERSION}")

    return run_fire(run, argv, "trainer.serving", string_flags=("--run",))


if __name__ == "__main__":
    raise SystemExit(main())
