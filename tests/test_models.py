"""Model builders: the trainer's Functional models are the exercise's Sequential ones
(bench/reference.py, plain Keras), weight for weight; unknown names list valid ones."""

from __future__ import annotations

import pytest

from bench.reference import build as exercise_model
from trainer.config import TrainConfig
from trainer.models import BUILDERS, build_model

# Parameter counts of the reference models (Embedding 5000x32 = 160,000).
EXPECTED_PARAMS = {
    "mean": 160_000 + 33,
    "lstm": 160_000 + 4 * 128 * (32 + 128 + 1) + 129,
}


def _weights(model) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(layer kind, weight shapes) of every layer that has weights, in order."""
    return [
        (type(layer).__name__, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
        if layer.weights
    ]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_trainers_model_is_the_exercises_sequential_model(name):
    ours = build_model(name, TrainConfig(model=name))
    exercise = exercise_model(name)
    assert _weights(ours) == _weights(exercise)
    assert ours.count_params() == exercise.count_params() == EXPECTED_PARAMS[name]
    assert ours.get_layer("embedding").input_dim == 5000
    assert ours.output_shape == exercise.output_shape == (None, 1)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'cnn': expected one of mean, lstm"):
        build_model("cnn", TrainConfig())
