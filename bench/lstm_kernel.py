"""`python -m bench.lstm_kernel`: the CPU cost of one LSTM(128) training step, computed two ways.

Why the trainer keeps Keras's own CPU LSTM: the reformulation below computes the same
function with the same weights (tests/test_lstm_kernel.py checks outputs and gradients
against `keras.layers.LSTM`), and it is not cheaper in CPU time on this model. Measured,
single thread, forward + backward of LSTM(128) over 100 steps of 32 features, figures in
BENCHMARKS.md:

- keras: `keras.layers.LSTM` on CPU (a `tf.while_loop`; TensorFlow derives its gradient);
- hoisted: all timesteps' input projections as one matmul before the loop, the loop
  unrolled in the graph, a hand-written gradient (`tf.custom_gradient`) whose weight
  gradients are one matmul each over all T*B rows, and whose per-step element-wise
  factors are computed for all timesteps at once;
- floor: the 100 sequential recurrent matmuls of the forward pass alone.

TensorFlow's fused `BlockLSTMV2` op (gate order i, f, c, o, as Keras) gave Keras's
forward values, but its registered gradient did not match Keras's and it was slower
single-threaded, so it is not among them. Prints one JSON line (RESULT_PREFIX).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  (after the log level)

RESULT_PREFIX = "BENCH_RESULT "


def _forward(x, h0, c0, kernel, rkernel, bias):
    """LSTM over x (batch, time, features); returns (last h, last c, what the gradient needs)."""
    steps = x.shape[1]
    units = rkernel.shape[0]
    batch = tf.shape(x)[0]
    xt = tf.transpose(x, [1, 0, 2])  # time-major, so each step reads a contiguous slice
    # All input projections at once: (T*B, D) @ (D, 4H).
    zx = tf.reshape(
        tf.matmul(tf.reshape(xt, [-1, x.shape[2]]), kernel) + bias, [steps, batch, 4 * units]
    )
    h, c = h0, c0
    hs, cs, sigs, gs, tcs = [h0], [c0], [], [], []
    for zx_t in tf.unstack(zx, num=steps):
        z = zx_t + tf.matmul(h, rkernel)
        s = tf.sigmoid(z)
        i, f, _, o = tf.split(s, 4, axis=1)
        g = tf.tanh(tf.split(z, 4, axis=1)[2])
        c = f * c + i * g
        tc = tf.tanh(c)
        h = o * tc
        hs.append(h)
        cs.append(c)
        sigs.append(s)
        gs.append(g)
        tcs.append(tc)
    return h, c, (xt, hs, cs, sigs, gs, tcs)


@tf.custom_gradient
def lstm_last(x, h0, c0, kernel, rkernel, bias):
    """Last hidden and cell state of an LSTM (Keras semantics, default activations)."""
    h, c, (xt, hs, cs, sigs, gs, tcs) = _forward(x, h0, c0, kernel, rkernel, bias)

    def grad(dh_last, dc_last):
        steps = len(sigs)
        units = rkernel.shape[0]
        # Every factor that depends on the forward pass only, for all timesteps at once
        # (a few large element-wise ops instead of many small ones inside the loop):
        # dz = [dc, dc, dc, dh] * a[t], dc += dh * b[t], dc_prev = dc * f[t].
        i, f, _, o = tf.split(tf.stack(sigs), 4, axis=2)
        g, tc, c_prev = tf.stack(gs), tf.stack(tcs), tf.stack(cs[:-1])
        a = tf.concat(
            [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)],
            axis=2,
        )
        b = o * (1.0 - tc * tc)
        a_t, b_t, f_t = (tf.unstack(v, num=steps) for v in (a, b, f))
        rkernel_t = tf.transpose(rkernel)
        dh, dc = dh_last, dc_last
        dzs = [None] * steps
        for t in reversed(range(steps)):
            dc = dc + dh * b_t[t]
            dz = tf.concat([dc, dc, dc, dh], axis=1) * a_t[t]
            dzs[t] = dz
            dc = dc * f_t[t]
            dh = tf.matmul(dz, rkernel_t)
        dz_all = tf.reshape(tf.stack(dzs), [-1, 4 * units])  # (T*B, 4H), time-major
        h_prev = tf.reshape(tf.stack(hs[:-1]), [-1, units])
        x_flat = tf.reshape(xt, [-1, xt.shape[2]])
        # The weight gradients as one matmul each over all T*B rows.
        d_kernel = tf.matmul(x_flat, dz_all, transpose_a=True)
        d_rkernel = tf.matmul(h_prev, dz_all, transpose_a=True)
        d_bias = tf.reduce_sum(dz_all, axis=0)
        dx = tf.reshape(tf.matmul(dz_all, kernel, transpose_b=True), tf.shape(xt))
        return tf.transpose(dx, [1, 0, 2]), dh, dc, d_kernel, d_rkernel, d_bias

    return (h, c), grad


VARIANTS = ("keras", "hoisted")


def _step_fn(variant: str, x, layer):
    """A compiled forward + backward of `variant` on x with `layer`'s weights."""
    h0 = tf.zeros([x.shape[0], layer.units])
    cell = layer.cell

    def last_h():
        if variant == "keras":
            return layer(x)
        return lstm_last(x, h0, h0, cell.kernel, cell.recurrent_kernel, cell.bias)[0]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(last_h())
        return tape.gradient(loss, [x, cell.kernel, cell.recurrent_kernel, cell.bias])

    return step


def measure(batch: int = 64, repeats: int = 5, calls: int = 10, threads: int = 1) -> dict:
    """CPU and wall milliseconds per forward + backward, median of `repeats`, variants
    interleaved so that the machine's drift hits each alike."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.keras.utils.set_random_seed(0)
    x = tf.random.normal([batch, 100, 32])
    layer = tf.keras.layers.LSTM(128)
    layer.build(x.shape)
    steps = {v: _step_fn(v, x, layer) for v in VARIANTS}
    rkernel = layer.cell.recurrent_kernel

    @tf.function
    def floor():
        h = tf.zeros([batch, 128])
        for _ in range(100):
            h = tf.matmul(h, rkernel)[:, :128]
        return h

    steps["floor"] = floor
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    wall: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # trace and warm up
    for _ in range(repeats):
        for name, fn in steps.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            cpu[name].append(1000 * (time.process_time() - c0) / calls)
            wall[name].append(1000 * (time.perf_counter() - w0) / calls)

    def med(xs):
        return round(sorted(xs)[len(xs) // 2], 2)

    return {
        "batch": batch,
        "threads": threads,
        "cpu_ms": {k: med(v) for k, v in cpu.items()},
        "wall_ms": {k: med(v) for k, v in wall.items()},
        "cpu_ms_all": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
    }


def main(argv: list[str] | None = None) -> int:
    import fire

    def cli(batch: int = 64, repeats: int = 5, calls: int = 10, threads: int = 1) -> None:
        print(RESULT_PREFIX + json.dumps(measure(batch, repeats, calls, threads)), flush=True)

    fire.Fire(cli, command=argv, name="lstm_kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
