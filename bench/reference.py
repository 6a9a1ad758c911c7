"""The original exercise in plain Keras 3: Sequential models, `model.fit` on numpy arrays.

Run as a subprocess by the benchmark (`python -m bench.reference --model lstm ...`); prints
one JSON line prefixed with RESULT_PREFIX. Only the data loading differs from the exercise:
the encoded arrays come from trainer.data.load (cached), as our trainer's do.
"""

from __future__ import annotations

import json
import os
import sys
import time

from trainer.contract import PROGRESS_ENV

RESULT_PREFIX = "BENCH_RESULT "


def build(model: str, vocab_size: int = 5000, maxlen: int = 100):
    """The exercise's two models, layer for layer (K.mean becomes keras.ops.mean)."""
    import keras

    layers = [keras.Input(shape=(maxlen,), dtype="int32"), keras.layers.Embedding(vocab_size, 32)]
    if model == "mean":
        layers.append(keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=1)))
    elif model == "lstm":
        layers.append(keras.layers.LSTM(128))
    else:
        raise ValueError(f"unknown model {model!r}: expected one of mean, lstm")
    layers.append(keras.layers.Dense(1, activation="sigmoid"))
    net = keras.Sequential(layers)
    net.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return net


def run(
    model: str = "lstm",
    data: str = "",
    cache_dir: str = "",
    sample: int = 0,
    epochs: int = 3,
    batch_size: int = 64,
    seed: int = 113,
) -> dict:
    """Train the reference model once; returns per-epoch seconds and test accuracy."""
    t_start = time.perf_counter()
    from trainer import data as data_mod

    ds = data_mod.load(data, 5000, 100, sample, cache_dir or None)
    import keras

    keras.utils.set_random_seed(seed)
    net = build(model)
    epoch_seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(round(time.perf_counter() - self.t0, 3))

    t_fit = time.perf_counter()
    net.fit(
        ds.x_train,
        ds.y_train,
        validation_data=(ds.x_test, ds.y_test),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[Timer()],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - t_fit
    loss, acc = net.evaluate(ds.x_test, ds.y_test, verbose=0, batch_size=batch_size)
    return {
        "model": model,
        "epoch_seconds": epoch_seconds,
        "fit_seconds": round(fit_seconds, 3),
        "test_accuracy": float(acc),
        "test_loss": float(loss),
        "train_examples": int(len(ds.y_train)),
        "test_examples": int(len(ds.y_test)),
        "jit_compile": bool(net.jit_compile),
        "process_seconds": round(time.perf_counter() - t_start, 3),
        "versions": {"keras": keras.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault(PROGRESS_ENV, "0")
    import fire

    def cli(**kw) -> None:
        print(RESULT_PREFIX + json.dumps(run(**kw)), flush=True)

    fire.Fire(cli, command=argv, name="reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
