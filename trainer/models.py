"""Model builders: name -> builder, in the Functional Keras API (named inputs and layers,
which neighbours.py and the serving export read back).

The exercise writes the same two networks in the Sequential API; bench/reference.py keeps
them in that form, as plain Keras with none of this project's code, and
tests/test_models.py checks that both are the same network, weight for weight."""

from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow as tf

from trainer import contract
from trainer.config import TrainConfig

# Honours TF_USE_LEGACY_KERAS: Keras 3 by default, tf-keras for multi-worker runs.
keras = tf.keras


def mean_functional(cfg: TrainConfig) -> keras.Model:
    words = keras.Input(shape=(cfg.max_review_length,), dtype="int32", name="words")
    x = keras.layers.Embedding(cfg.vocab_size, cfg.embedding_dim, name="embedding")(words)
    x = keras.layers.GlobalAveragePooling1D(name="mean")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    return keras.Model(words, out, name="mean")


def lstm_functional(cfg: TrainConfig) -> keras.Model:
    words = keras.Input(shape=(cfg.max_review_length,), dtype="int32", name="words")
    x = keras.layers.Embedding(cfg.vocab_size, cfg.embedding_dim, name="embedding")(words)
    x = keras.layers.LSTM(cfg.lstm_units, name="lstm")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    return keras.Model(words, out, name="lstm")


BUILDERS: dict[str, Callable[[TrainConfig], keras.Model]] = {
    "mean": mean_functional,
    "lstm": lstm_functional,
}


def build_model(name: str, cfg: TrainConfig) -> keras.Model:
    """Build (uncompiled) model `name`.

    Raises:
        ValueError: unknown model name; the message lists the valid ones.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(BUILDERS)}")
    return BUILDERS[name](cfg)


def _jit_compile(cfg: TrainConfig) -> dict:
    # "auto" keeps Keras's choice (off on CPU-only machines and under tf.distribute). XLA on
    # 2 CPU cores halved the eval time but ran the LSTM's training loop on one core, so it
    # was slower overall (BENCHMARKS.md); the flag is for other machines.
    return {} if cfg.jit_compile == "auto" else {"jit_compile": cfg.jit_compile == "true"}


def steps_per_execution(cfg: TrainConfig) -> int:
    """cfg.steps_per_execution where Keras can run it: Keras 3's multi-step loop fails under
    a MirroredStrategy of several replicas on TF 2.21 ("while/cond/Placeholder"), so there
    it is 1. Call inside the strategy's scope."""
    legacy = os.environ.get(contract.LEGACY_KERAS_ENV) == "1"
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return cfg.steps_per_execution if legacy or replicas == 1 else 1


def compile_model(model: keras.Model, cfg: TrainConfig, learning_rate=None) -> keras.Model:
    """Compile for training; `learning_rate` (a number or a schedule) defaults to cfg's."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=cfg.learning_rate if learning_rate is None else learning_rate
        ),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        # Batches per compiled call; same batches and updates whatever the value.
        steps_per_execution=steps_per_execution(cfg),
        **_jit_compile(cfg),
    )
    return model
