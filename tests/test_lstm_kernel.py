"""The LSTM formulations bench/lstm_kernel.py times compute exactly `keras.layers.LSTM`:
same outputs and gradients from the same kernel / recurrent_kernel / bias, on inputs
padded at the front as the trainer's are (no mask: padding is an ordinary input)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bench import lstm_kernel

keras = tf.keras
VOCAB, STEPS, DIM, UNITS = 50, 12, 7, 6


def _padded_ids(rng) -> np.ndarray:
    # Front padding with id 0, reviews of different lengths, as pad_sequences produces.
    ids = np.zeros((5, STEPS), dtype=np.int32)
    for row, length in enumerate((STEPS, 9, 4, 1, 0)):
        if length:
            ids[row, -length:] = rng.integers(1, VOCAB, length)
    return ids


def _layers(seed: int):
    rng = np.random.default_rng(seed)
    embedding = keras.layers.Embedding(VOCAB, DIM)
    lstm = keras.layers.LSTM(UNITS)
    lstm.build((None, STEPS, DIM))
    embedding.build((None, STEPS))
    # Random weights at a scale that drives the gates away from their linear range.
    lstm.set_weights([rng.normal(size=w.shape).astype("float32") for w in lstm.get_weights()])
    return embedding, lstm, _padded_ids(rng)


def _outputs_and_grads(fn, embedding, lstm, ids):
    cell = lstm.cell
    weights = [cell.kernel, cell.recurrent_kernel, cell.bias]
    x = embedding(ids)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = fn(x, weights)
        # A loss that weighs every unit differently, so a swapped unit shows.
        loss = tf.reduce_sum(h * tf.range(1.0, UNITS + 1.0))
    grads = tape.gradient(loss, [x, *weights])
    return h.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def _keras(lstm):
    return lambda x, weights: lstm(x)


def _variant(name):
    fn = lstm_kernel.lstm_last

    def run(x, weights):
        zeros = tf.zeros([tf.shape(x)[0], UNITS])
        return fn(x, zeros, zeros, *(tf.convert_to_tensor(w) for w in weights))[0]

    return run


@pytest.mark.parametrize("variant", ["hoisted"])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_outputs_and_gradients_as_keras(variant, seed):
    embedding, lstm, ids = _layers(seed)
    want_h, want_grads = _outputs_and_grads(_keras(lstm), embedding, lstm, ids)
    got_h, got_grads = _outputs_and_grads(_variant(variant), embedding, lstm, ids)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(
        ("x", "kernel", "recurrent", "bias"), got_grads, want_grads, strict=True
    ):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_a_swapped_gate_is_noticed():
    """The comparison above can fail: the forget and cell gates swapped give other values."""
    embedding, lstm, ids = _layers(0)
    x = embedding(ids)
    parts = [np.split(w.numpy(), 4, axis=-1) for w in lstm.weights]
    swapped = [np.concatenate([p[0], p[2], p[1], p[3]], axis=-1) for p in parts]
    got = _variant("hoisted")(x, swapped).numpy()
    same = _variant("hoisted")(x, [w.numpy() for w in lstm.weights]).numpy()
    np.testing.assert_allclose(same, lstm(x).numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(got - lstm(x).numpy()).max() > 1e-2
