"""`python -m bench.parity --run RUN`: training, prediction and serving agree on a run's test split.

On the raw test reviews the run was evaluated on (all 25,000 for a full-data run) it
prints: the rows where the Python encoder (`trainer.data.ids_from_texts`, what
`trainer.predict` uses) differs from the arrays the trainer tested on; the rows where the
SavedModel's in-graph tokeniser differs from the Python encoder; the test accuracy
`trainer.predict`'s scores give against the one recorded in metrics.json; the largest
difference between the SavedModel's scores and `trainer.predict`'s. Then one JSON line
with the same figures. Exit 1 when a parity check fails.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCORE_TOLERANCE = 1e-5  # SavedModel vs trainer.predict, float32 through different graphs


def _serving_dir(store, tmp: Path) -> Path:
    """The run's SavedModel version directory, downloaded when the store is remote."""
    from trainer import contract

    local = getattr(store, "root", None)
    base = Path(tmp) / contract.SERVING_DIR
    if local is not None:
        base = Path(local) / contract.SERVING_DIR
    else:
        for key in store.list(contract.SERVING_DIR):
            store.download_file(key, Path(tmp) / key)
    version = base / contract.SERVING_VERSION
    if not (version / "saved_model.pb").is_file():
        raise SystemExit(
            f"error: run {store.uri} has no {contract.SERVING_DIR}/{contract.SERVING_VERSION}/"
            "saved_model.pb: export it with python -m trainer.serving --run RUN"
        )
    return version


def _batches(n: int, size: int, desc: str):
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=desc, unit="review", leave=False, file=sys.stderr) as bar:
        for lo in range(0, n, size):
            yield lo, min(lo + size, n)
            bar.update(min(size, n - lo))


def parity(run: str, data: str = "", batch_size: int = 1024, cache_dir: str = "") -> dict:
    """Measure the four parities of one run (see the module docstring)."""
    from trainer import data as data_mod
    from trainer import predict, quiet, runs

    with quiet.quietly():
        loaded = runs.load_run(run)
        import tensorflow as tf
    cfg = loaded.config.get("config", {})
    source = data or cfg.get("data", "")
    sample = int(cfg.get("sample", 0))
    texts, labels = data_mod.raw_split(source, "test", cache_dir=cache_dir or None)
    if sample:
        texts, labels = texts[:sample], labels[:sample]
    n = len(texts)
    figures: dict = {"run": loaded.uri, "data": source, "reviews": n}

    t0 = time.perf_counter()
    py_ids = loaded.encode(texts)
    figures["encode_seconds"] = round(time.perf_counter() - t0, 2)
    ds = data_mod.load(
        source, loaded.vocab_size, loaded.max_review_length, sample, cache_dir or None
    )
    figures["encoder_vs_training_arrays_mismatched_rows"] = int(
        (py_ids != ds.x_test).any(axis=1).sum()
    )
    figures["labels_match_training"] = bool((labels == ds.y_test).all())

    t0 = time.perf_counter()
    py_scores = loaded.scores(texts, batch_size)
    figures["predict_seconds"] = round(time.perf_counter() - t0, 2)
    correct = int(((py_scores > predict.THRESHOLD) == (labels == 1)).sum())
    recorded = loaded.metrics.get("test_accuracy")
    figures["predict_accuracy"] = correct / n
    figures["recorded_accuracy"] = recorded
    figures["accuracy_reproduced"] = recorded is not None and correct == round(recorded * n)

    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        with quiet.quietly():
            served = tf.saved_model.load(str(_serving_dir(loaded.store, Path(tmp))))
            tokenize, serve = served.signatures["tokenize"], served.signatures["serving_default"]
            serve(reviews=tf.constant([""]))  # TensorFlow's first-call lines stay out of sight
        graph_ids = np.zeros_like(py_ids)
        graph_scores = np.zeros(n, dtype=np.float32)
        t0 = time.perf_counter()
        for lo, hi in _batches(n, batch_size, "savedmodel"):
            batch = tf.constant(texts[lo:hi], tf.string)
            graph_ids[lo:hi] = tokenize(reviews=batch)["ids"].numpy()
            graph_scores[lo:hi] = serve(reviews=batch)["probability"].numpy()
        figures["savedmodel_seconds"] = round(time.perf_counter() - t0, 2)
    figures["tokeniser_mismatched_rows"] = int((graph_ids != py_ids).any(axis=1).sum())
    figures["max_score_difference"] = float(np.abs(graph_scores - py_scores).max()) if n else 0.0
    figures["ok"] = (
        figures["encoder_vs_training_arrays_mismatched_rows"] == 0
        and figures["tokeniser_mismatched_rows"] == 0
        and figures["accuracy_reproduced"]
        and figures["max_score_difference"] < SCORE_TOLERANCE
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.commandline import run_fire

    result: dict = {}

    def run(run: str = "", data: str = "", batch_size: int = 1024, cache_dir: str = "") -> None:
        """Parity of training, trainer.predict and the serving SavedModel on a run's test split.

        Args:
            run: a finished run (directory or URI; <model>/latest resolves).
            data: the raw aclImdb source (default: the one the run was trained on).
            batch_size: reviews per model call.
            cache_dir: the encoded-data cache (default ~/.cache/imdb-train).
        """
        result.update(parity(str(run), str(data), int(batch_size), str(cache_dir)))
        f = result
        print(f"run {f['run']}: {f['reviews']} raw test reviews from {f['data']}")
        print(
            "python encoder vs training arrays: "
            f"{f['encoder_vs_training_arrays_mismatched_rows']} mismatched rows"
        )
        print(
            f"in-graph tokeniser vs python encoder: {f['tokeniser_mismatched_rows']} "
            "mismatched rows"
        )
        print(
            f"trainer.predict accuracy {f['predict_accuracy']:.6f} vs recorded "
            f"{f['recorded_accuracy']:.6f}: "
            f"{'reproduced' if f['accuracy_reproduced'] else 'NOT reproduced'}"
        )
        print(
            f"max |SavedModel - trainer.predict| score: {f['max_score_difference']:.3g} "
            f"(tolerance {SCORE_TOLERANCE:g})"
        )
        print(
            f"seconds: encode {f['encode_seconds']}, predict {f['predict_seconds']}, "
            f"SavedModel (tokenise + score) {f['savedmodel_seconds']}"
        )
        print("parity: " + json.dumps(f))

    code = run_fire(run, argv, "bench.parity", string_flags=("--run", "--data", "--cache-dir"))
    if code == 0 and not result.get("ok", False):
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
