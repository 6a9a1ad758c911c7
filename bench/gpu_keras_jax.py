"""GPU benchmark of the two IMDB models with plain Keras 3; needs only keras, numpy and a backend.

Standalone on purpose (no project imports, no fire, no TensorFlow needed): it runs where
only `keras` (a pure-Python wheel) can be carried next to an installed JAX. Default backend
JAX; KERAS_BACKEND=tensorflow runs the same grid with TensorFlow (bench/gpu.sh does).

For each model and each (precision, global batch) it trains epoch by epoch and reports the
per-epoch training time (first epoch = compile + run, steady = median of the rest), the test
accuracy after every epoch, and the training time until the test accuracy first reaches the
target (84 %). Larger batches get a scaled learning rate (sqrt by default, or linear).
It also says which LSTM kernel the backend compiled (cuDNN, an XLA while loop, ...).

    KERAS_BACKEND=jax python bench/gpu_keras_jax.py --npz imdb_encoded.npz
    (make the npz with `python -m bench.export_npz imdb_encoded.npz` where the project is)

Prints a table at the end; writes the JSON to $OUT/gpu_keras_<backend>.json when OUT is
set, or to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

BACKEND = keras.backend.backend()


def build(model: str, vocab_size: int = 5000, maxlen: int = 100) -> keras.Model:
    """The trainer's two models (same layers and sizes as trainer/models.py)."""
    words = keras.Input(shape=(maxlen,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 32, name="embedding")(words)
    if model == "mean":
        x = keras.layers.GlobalAveragePooling1D()(x)
    elif model == "lstm":
        x = keras.layers.LSTM(128)(x)
    else:
        raise ValueError(f"unknown model {model!r}: expected one of mean, lstm")
    # float32 output under mixed precision: a float16 sigmoid saturates and the loss with it.
    out = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(words, out, name=model)


def devices() -> list[str]:
    if BACKEND == "jax":
        import jax

        return [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [d.name for d in gpus] or ["cpu"]
    return [BACKEND]


def lstm_kernel(model: keras.Model, batch: int) -> str:
    """Which implementation of the LSTM the backend compiles for a training forward pass."""
    x = np.zeros((batch, model.input_shape[1]), dtype="int32")
    try:
        if BACKEND == "jax":
            import jax

            tv = [v.value for v in model.trainable_variables]
            ntv = [v.value for v in model.non_trainable_variables]

            def fwd(tv, ntv, x):
                return model.stateless_call(tv, ntv, x, training=True)[0]

            text = jax.jit(fwd).lower(tv, ntv, x).compile().as_text().lower()
            if "cudnn" in text and "rnn" in text:
                return "cudnn"
            return "xla-while-loop" if "while" in text else "xla-unrolled"
        if BACKEND == "torch":
            import torch
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                model(x, training=True)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            ops = " ".join(e.key.lower() for e in prof.key_averages())
            if "_cudnn_rnn" in ops:
                return "cudnn"
            return "aten-lstm" if "lstm" in ops else "per-step-ops"
        if BACKEND == "tensorflow":
            import tensorflow as tf

            fn = tf.function(lambda x: model(x, training=True))
            graph = fn.get_concrete_function(x).graph.as_graph_def()
            # The loop body of a while loop lives in the function library, not the graph.
            ops = {n.op for n in graph.node}
            ops |= {n.op for f in graph.library.function for n in f.node_def}
            if any(o.startswith("CudnnRNN") for o in ops):
                return "cudnn"
            return "tf-while-loop" if ops & {"While", "StatelessWhile"} else "tf-unrolled"
    except Exception as e:  # a diagnostic only: never fail the benchmark on it
        return f"unknown ({type(e).__name__}: {e})"
    return "unknown"


def train_one(model_name, data, precision, batch, lr, args) -> dict:
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(args.seed)
    try:
        model = build(model_name)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=lr),
            loss="binary_crossentropy",
            metrics=["accuracy"],
        )
        kernel = lstm_kernel(model, batch) if model_name == "lstm" else None
        x_train, y_train, x_test, y_test = data
        epoch_s, eval_s, accs = [], [], []
        reached = None
        train_total = 0.0
        for epoch in range(1, args.max_epochs + 1):
            t0 = time.perf_counter()
            model.fit(x_train, y_train, batch_size=batch, epochs=1, verbose=0, shuffle=True)
            seconds = time.perf_counter() - t0
            train_total += seconds
            t0 = time.perf_counter()
            _, acc = model.evaluate(x_test, y_test, batch_size=args.eval_batch, verbose=0)
            eval_s.append(round(time.perf_counter() - t0, 3))
            epoch_s.append(round(seconds, 3))
            accs.append(round(float(acc), 5))
            if reached is None and acc >= args.target:
                reached = {"epoch": epoch, "train_seconds": round(train_total, 3)}
            if epoch >= args.min_epochs and reached is not None:
                break
    finally:
        keras.mixed_precision.set_global_policy("float32")
    steady = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    return {
        "model": model_name,
        "precision": precision,
        "batch_size": batch,
        "learning_rate": lr,
        "lstm_kernel": kernel,
        "epoch_seconds": epoch_s,
        "eval_seconds": eval_s,
        "first_epoch_seconds": epoch_s[0],
        "steady_epoch_seconds": round(steady, 3),
        "examples_per_second": round(len(y_train) / steady, 1),
        "test_accuracy": accs,
        "best_test_accuracy": max(accs),
        "time_to_target": reached,
    }


def scaled_lr(batch: int, args) -> float:
    factor = batch / args.base_batch
    return args.lr * (factor if args.lr_scaling == "linear" else factor**0.5)


def table(runs: list[dict], target: float) -> str:
    head = (
        f"{'model':5} {'precision':14} {'batch':>5} {'lr':>8} {'first s':>8} {'epoch s':>8} "
        f"{'ex/s':>9} {'acc@3':>6} {'best':>6} {f'to {100 * target:.0f}%':>14}  kernel"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        if "skipped" in r:
            lines.append(
                f"{r['model']:5} {r['precision']:14} {r['batch_size']:>5} {r['skipped'][:60]}"
            )
            continue
        reach = r["time_to_target"]
        to = f"{reach['train_seconds']:.1f}s/{reach['epoch']}ep" if reach else "not reached"
        acc3 = r["test_accuracy"][min(2, len(r["test_accuracy"]) - 1)]
        lines.append(
            f"{r['model']:5} {r['precision']:14} {r['batch_size']:>5} "
            f"{r['learning_rate']:>8.5f} {r['first_epoch_seconds']:>8.2f} "
            f"{r['steady_epoch_seconds']:>8.2f} {r['examples_per_second']:>9.0f} "
            f"{100 * acc3:>6.2f} {100 * r['best_test_accuracy']:>6.2f} {to:>14}  "
            f"{r['lstm_kernel'] or '-'}"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True, help="x_train/y_train/x_test/y_test (bench.export_npz)")
    p.add_argument("--models", default="mean,lstm")
    p.add_argument("--batches", default="64,256,1024", help="global batch sizes")
    p.add_argument("--precisions", default="float32,mixed_float16")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate at --base-batch")
    p.add_argument("--base-batch", type=int, default=64)
    p.add_argument("--lr-scaling", choices=("sqrt", "linear"), default="sqrt")
    p.add_argument("--target", type=float, default=0.84, help="test accuracy for time-to-target")
    p.add_argument("--min-epochs", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--eval-batch", type=int, default=1024)
    p.add_argument("--sample", type=int, default=0, help="first N reviews per split (tests)")
    p.add_argument("--seed", type=int, default=113)
    p.add_argument("--budget-seconds", type=float, default=480, help="skip configs after this")
    p.add_argument("--json", default="", help="result path (default $OUT/gpu_keras_<b>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with np.load(args.npz) as f:
        arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    if args.sample:
        arrays = [a[: args.sample] for a in arrays]
    arrays = [
        a.astype("int32") if i % 2 == 0 else a.astype("float32") for i, a in enumerate(arrays)
    ]
    t_start = time.perf_counter()
    info = {
        "backend": BACKEND,
        "keras": keras.__version__,
        "devices": devices(),
        "python": platform.python_version(),
        "train_examples": int(len(arrays[1])),
        "test_examples": int(len(arrays[3])),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    if BACKEND == "jax":
        import jax

        info["jax"] = jax.__version__
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    print(f"backend {BACKEND}, devices {info['devices']}", flush=True)
    runs = []
    for model_name in args.models.split(","):
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                lr = scaled_lr(batch, args)
                if time.perf_counter() - t_start > args.budget_seconds:
                    runs.append(
                        {"model": model_name, "precision": precision, "batch_size": batch,
                         "skipped": f"over the {args.budget_seconds:.0f} s budget"}
                    )  # fmt: skip
                    continue
                try:
                    r = train_one(model_name, arrays, precision, batch, lr, args)
                except Exception as e:  # one unsupported config must not lose the others
                    reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                    print(f"{model_name} {precision} batch {batch}: failed: {reason}", flush=True)
                    runs.append(
                        {
                            "model": model_name,
                            "precision": precision,
                            "batch_size": batch,
                            "skipped": f"failed: {reason}",
                        }
                    )
                    continue
                print(
                    f"{model_name} {precision} batch {batch}: epochs {r['epoch_seconds']} s, "
                    f"test accuracy {r['test_accuracy']}, kernel {r['lstm_kernel']}",
                    flush=True,
                )
                runs.append(r)
    result = {**info, "seconds": round(time.perf_counter() - t_start, 1), "runs": runs}
    print()
    print(table(runs, args.target))
    path = args.json or (
        os.path.join(os.environ["OUT"], f"gpu_keras_{BACKEND}.json")
        if os.environ.get("OUT")
        else ""
    )
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
