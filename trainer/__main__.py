"""Container entrypoint and local CLI: `python -m trainer --model lstm --data ... --output ...`."""

from __future__ import annotations

import os
import sys

from trainer.config import (
    DEFAULT_DATA,
    DEFAULT_QUERIES,
    EXIT_BAD_INPUT,
    EXIT_CRASH,
    EXIT_OK,
    EXIT_RETRYABLE,
    ConfigError,
    TrainConfig,
)


def run(
    model: str = "lstm",
    data: str = DEFAULT_DATA,
    output: str = "./runs",
    run_id: str = "",
    epochs: int = 3,
    batch_size: int = 64,
    vocab_size: int = 5000,
    max_review_length: int = 100,
    embedding_dim: int = 32,
    lstm_units: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 113,
    sample: int = 0,
    neighbours: str = ",".join(DEFAULT_QUERIES),
    k: int = 10,
    metric: str = "euclidean",
    cpu_devices: int = 0,
    promote: bool = True,
    min_accuracy: float = 0.0,
    tolerance: float = 0.005,
    cache_dir: str = "",
    steps_per_execution: int = 16,
    eval_batch_size: int = 1024,
    jit_compile: str = "auto",
    profile: str = "reference",
) -> None:
    """Train one IMDB sentiment model and write its run to the store.

    Args:
        model: "mean" (embedding average) or "lstm" (LSTM(128)).
        data: "keras" (official imdb.npz, downloaded and cached), a path or gs:// URI of
            imdb.npz, or an aclImdb tarball / directory (train|test/pos|neg/*.txt).
        output: store root: a local path, file:///path or gs://bucket/prefix. The run is
            written under <output>/<model>/<run-id>/.
        run_id: name of the run; the same id again resumes it. Default: a timestamp.
        epochs: training epochs.
        batch_size: GLOBAL batch size (examples per step across all replicas).
        vocab_size: the most frequent words kept (ids >= this become out-of-vocabulary).
        max_review_length: reviews are truncated / zero-padded (at the front) to this.
        embedding_dim: word vector size.
        lstm_units: LSTM width (lstm model only).
        learning_rate: Adam learning rate.
        seed: random seed.
        sample: if > 0, train and test on the first N reviews of each split (smoke runs).
        neighbours: comma-separated query words for the nearest-neighbour lists.
        k: neighbours per query word.
        metric: "euclidean" or "cosine".
        cpu_devices: with no GPU, mirror over this many logical CPU devices (testing).
        promote: move <output>/<model>/latest.json to this run if it passes the gate.
        min_accuracy: promotion floor on test accuracy (0..1).
        tolerance: promotion allows this much less accuracy than the current latest.
        cache_dir: where downloads and encoded data are cached (default ~/.cache/imdb-train).
        steps_per_execution: batches per compiled call (speed only; SIGTERM is noticed
            between calls).
        eval_batch_size: GLOBAL batch size of the validation/test passes (speed only).
        jit_compile: XLA: "auto" (Keras's choice: off on CPU), "true" or "false".
        profile: "reference" (the exercise's recipe) or "fast" (larger global batch, warm-up,
            early stopping on a split of the training set; sets batch size, learning rate
            and epochs: see trainer/profiles.py).

    Exit codes: 0 done, 2 bad input (permanent), 75 preempted (rerun to resume),
    1 unexpected error.
    """
    from trainer import distribute
    from trainer.data import DataError
    from trainer.storage import StoreError

    try:
        cfg = TrainConfig(
            model=model,
            data=data,
            output=output,
            run_id=run_id,
            epochs=epochs,
            batch_size=batch_size,
            vocab_size=vocab_size,
            max_review_length=max_review_length,
            embedding_dim=embedding_dim,
            lstm_units=lstm_units,
            learning_rate=learning_rate,
            seed=seed,
            sample=sample,
            neighbours=neighbours,
            k=k,
            metric=metric,
            cpu_devices=cpu_devices,
            promote=promote,
            min_accuracy=min_accuracy,
            tolerance=tolerance,
            cache_dir=cache_dir,
            steps_per_execution=steps_per_execution,
            eval_batch_size=eval_batch_size,
            jit_compile=jit_compile,
            profile=profile,
        )
        from trainer.storage import open_store

        open_store(cfg.output)  # validates the scheme and bucket name before any work
        if distribute.is_multi_worker():
            # Keras 3 model.fit fails under MultiWorkerMirroredStrategy on TF 2.21
            # (keras-team/keras#20585); tf-keras runs it. Must be set before TF loads.
            os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
            distribute.collective_timeout_from_env()  # a bad value is bad input, fail early
        from trainer.train import RetryableError, train

        train(cfg)
    except (ConfigError, DataError, StoreError, distribute.DistributeError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except RetryableError as e:
        print(f"stopped, resumable: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(EXIT_RETRYABLE) from None
    except Exception as e:
        reason = distribute.peer_failure(e) if distribute.is_multi_worker() else None
        if reason is None:
            raise
        # One synchronous group: a lost peer fails every worker; the Job reruns the whole
        # group with the same run id, which resumes from the last checkpoint.
        print(
            f"error: the worker group broke ({reason}); rerun all workers with "
            f"--run-id {cfg.run_id} to resume from the last checkpoint",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_RETRYABLE) from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import fire

    try:
        fire.Fire(run, command=argv, name="trainer")
    except SystemExit as e:  # our exit codes, and fire's usage errors (2)
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    except Exception:
        import traceback

        traceback.print_exc()
        return EXIT_CRASH
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
