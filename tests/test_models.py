"""Model builders: both Keras APIs give the same network; unknown names list valid ones."""

from __future__ import annotations

import pytest

from trainer.config import TrainConfig
from trainer.models import BUILDERS, build_model

# Parameter counts of the reference models (Embedding 5000x32 = 160,000).
EXPECTED_PARAMS = {
    "mean": 160_000 + 33,
    "lstm": 160_000 + 4 * 128 * (32 + 128 + 1) + 129,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sequential_and_functional_builders_agree(name):
    cfg = TrainConfig(model=name)
    seq = build_model(name, cfg, "sequential")
    fun = build_model(name, cfg, "functional")
    describe = [
        (type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
        for layer in seq.layers
    ]
    assert describe == [
        (type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
        for layer in fun.layers
        if type(layer).__name__ != "InputLayer"
    ]
    assert seq.count_params() == fun.count_params() == EXPECTED_PARAMS[name]
    assert seq.get_layer("embedding").input_dim == 5000
    assert seq.output_shape == fun.output_shape == (None, 1)


@pytest.mark.parametrize(
    ("name", "api", "message"),
    [
        pytest.param(
            "cnn", "functional", "unknown model 'cnn': expected one of mean, lstm", id="model"
        ),
        pytest.param(
            "lstm",
            "subclass",
            "unknown Keras API 'subclass': expected one of sequential, functional",
            id="api",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(name, api, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, TrainConfig(), api)
