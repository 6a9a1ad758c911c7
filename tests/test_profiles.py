"""`--profile fast`: how it resolves, where its validation data comes from, its schedule,
and an end-to-end run on two replicas whose saved model loads in plain Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, trainer_env
from trainer import profiles
from trainer.config import ConfigError, TrainConfig
from trainer.data import Dataset


def test_reference_profile_is_the_exercise():
    cfg = TrainConfig(model="lstm")
    assert cfg.profile == "reference"
    plan = profiles.resolve(cfg)
    assert plan.cfg is cfg and plan.fast is None
    assert (cfg.batch_size, cfg.learning_rate, cfg.epochs) == (64, 1e-3, 3)
    assert (profiles.REFERENCE_BATCH, profiles.REFERENCE_LEARNING_RATE) == (64, 1e-3)
    assert plan.describe()["profile"] == "reference"
    assert plan.learning_rate(100) == 1e-3
    assert plan.callbacks() == []
    assert plan.steps_per_epoch(1000) is None


@pytest.mark.parametrize("model", ["lstm", "mean"])
def test_fast_profile_resolves_from_the_table(model):
    recipe = profiles.FAST[model]
    asked = TrainConfig(model=model, profile="fast", batch_size=32, learning_rate=0.5, epochs=9)
    cfg = profiles.resolve(asked).cfg
    # Resolved once, into a copy: the config as asked stays as it was.
    assert (asked.batch_size, asked.learning_rate, asked.epochs) == (32, 0.5, 9)
    assert cfg.batch_size == recipe.batch_size
    assert cfg.epochs == recipe.epochs
    ratio = recipe.batch_size / 64
    scale = ratio if recipe.lr_scaling == "linear" else ratio**0.5
    assert cfg.learning_rate == pytest.approx(1e-3 * scale)
    # Resolving again (config.json -> TrainConfig) must not scale twice.
    again = profiles.resolve(
        TrainConfig(**{**cfg.to_dict(), "neighbours": tuple(cfg.neighbours)})
    ).cfg
    assert (again.batch_size, again.learning_rate, again.epochs) == (
        cfg.batch_size,
        cfg.learning_rate,
        cfg.epochs,
    )
    doc = profiles.resolve(asked).describe()
    assert doc["batch_size"] == cfg.batch_size and doc["learning_rate"] == cfg.learning_rate
    assert "training reviews" in doc["validation"]


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match="unknown profile 'turbo': expected one of reference, fast"
    ):
        TrainConfig(profile="turbo")


def test_cli_rejects_an_unknown_profile_before_writing(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "--profile", "turbo", "--output", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown profile 'turbo': expected one of reference, fast"
    ]
    assert not out.exists()


def _dataset(n_train: int = 200, n_test: int = 50) -> Dataset:
    x_train = np.arange(n_train * 3, dtype=np.int32).reshape(n_train, 3)
    x_test = -np.arange(n_test * 3, dtype=np.int32).reshape(n_test, 3) - 1
    return Dataset(
        x_train=x_train,
        y_train=np.arange(n_train) % 2,
        x_test=x_test,
        y_test=np.arange(n_test) % 2,
        word_index={},
        source="t",
        sha256="0" * 64,
    )


def test_validation_is_held_out_of_the_training_set_never_the_test_set():
    ds = _dataset()
    plan = profiles.resolve(TrainConfig(model="lstm", profile="fast"))
    train, (x_val, y_val) = plan.split_validation(ds)
    held = round(200 * profiles.FAST["lstm"].validation_split)
    assert len(x_val) == len(y_val) == held
    assert len(train.x_train) == len(train.y_train) == 200 - held
    train_rows = {tuple(r) for r in train.x_train}
    val_rows = {tuple(r) for r in x_val}
    assert not train_rows & val_rows  # disjoint
    assert train_rows | val_rows == {tuple(r) for r in ds.x_train}  # nothing lost
    assert not val_rows & {tuple(r) for r in ds.x_test}  # not the test set
    assert train.x_test is ds.x_test  # the test set is untouched, for the end
    same, none = profiles.resolve(TrainConfig(model="lstm")).split_validation(ds)
    assert same is ds and none is None


def test_fast_schedule_warms_up_then_decays():
    plan = profiles.resolve(TrainConfig(model="lstm", profile="fast"))
    cfg, recipe = plan.cfg, profiles.FAST["lstm"]
    steps = 100
    schedule = plan.learning_rate(steps)
    warmup = int(steps * recipe.warmup_fraction)
    total = steps * cfg.epochs
    lr = [float(schedule(s)) for s in (0, warmup // 2, warmup, (warmup + total) // 2, total)]
    assert lr[0] == pytest.approx(cfg.learning_rate * recipe.final_lr_fraction)
    assert lr[0] < lr[1] < lr[2] == pytest.approx(cfg.learning_rate)
    assert lr[2] > lr[3] > lr[4] == pytest.approx(cfg.learning_rate * recipe.final_lr_fraction)
    # Built in, so a saved optimizer needs no project code.
    assert type(schedule).__module__.startswith(("keras", "tf_keras"))


# A model.keras that plain Keras must load: no project code on the path, a fresh directory.
PLAIN_LOAD = """
import json, sys
import keras
import numpy as np
model = keras.models.load_model(sys.argv[1])
kinds = {layer.name: type(layer).__module__ + "." + type(layer).__name__ for layer in model.layers}
x = np.array(json.loads(sys.argv[2]), dtype="int32")
print(json.dumps({"kinds": kinds, "pred": model.predict(x, verbose=0).ravel().tolist(),
                  "lr": model.optimizer.get_config()["learning_rate"]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "mean"])
def test_fast_profile_on_two_replicas(model, shared_tarball, warm_cache, tmp_path):
    """The batch stays global on two replicas, the recipe is recorded, validation is the
    held-out training share, and the saved model loads in plain Keras."""
    out = tmp_path / "runs"
    env = trainer_env()
    cmd = [sys.executable, "-m", "trainer", "--model", model, "--profile", "fast"]
    cmd += ["--data", str(shared_tarball), "--output", str(out), "--run-id", "fast"]
    cmd += ["--sample", "600", "--cpu-devices", "2", "--cache-dir", str(warm_cache)]
    cmd += ["--promote=False", "--neighbours", "great"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = out / model / "fast"
    recipe = profiles.FAST[model]
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["profile"] == "fast"
    assert config["config"]["batch_size"] == recipe.batch_size  # global
    assert config["replicas"] == 2
    assert config["per_replica_batch_size"] == recipe.batch_size / 2
    assert config["recipe"]["learning_rate"] == pytest.approx(recipe.learning_rate)
    assert config["recipe"]["validation_split"] == recipe.validation_split
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_batch_size"] == recipe.batch_size
    held = round(600 * recipe.validation_split)
    assert metrics["train_examples"] == 600 - held
    assert 1 <= metrics["epochs_completed"] <= recipe.epochs
    assert len(metrics["history"]["val_accuracy"]) == metrics["epochs_completed"]
    # Validation accuracies are counts over the held-out share, never over the test set.
    for acc in metrics["history"]["val_accuracy"]:
        assert round(acc * held) == pytest.approx(acc * held, abs=1e-3)
    assert metrics["final_accuracy_at"] > 0

    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean_env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    x = [[1] + [i % 4000 + 4 for i in range(99)], [0] * 90 + [1, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(run / "model.keras"), json.dumps(x)],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    loaded = json.loads(plain.stdout.strip().splitlines()[-1])
    if model == "lstm":
        assert loaded["kinds"]["lstm"] == "keras.src.layers.rnn.lstm.LSTM"
    # The optimizer's schedule was saved with the model and is a built-in Keras one.
    assert loaded["lr"]["class_name"] == "CosineDecay"
    assert loaded["lr"]["config"]["warmup_target"] == pytest.approx(recipe.learning_rate)
    assert all(0.0 <= p <= 1.0 for p in loaded["pred"]) and len(loaded["pred"]) == 2
