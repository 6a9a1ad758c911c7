"""Training recipes: "reference" (the exercise's hyper-parameters) and "fast" (its accuracy sooner).

TensorFlow-free at import (config.py resolves profiles). The fast recipe, per model (FAST):

- a larger GLOBAL batch (examples per optimizer step over all replicas, as everywhere in
  the trainer), Adam's learning rate scaled linearly from the reference's 1e-3 at batch 64;
- a linear warm-up to that rate over the first part of the first epoch, then a cosine
  decay to a tenth of it over the planned steps (the built-in
  `keras.optimizers.schedules.CosineDecay`: saved models need no project code);
- a validation split held out of the TRAINING set (its last `validation_split` share;
  the training reviews are already shuffled), early stopping on its accuracy with the
  best epoch's weights restored, and the test set read once, at the end;
- for the LSTM, epochs of half a pass over the training set: on a CPU the cost is per
  example whatever the batch, so the recipe is "as few passes as reach the accuracy"
  (2 here, checked every half pass) rather than "as few steps": 1.5 passes reached it on
  average, but with some seeds well below the others (BENCHMARKS.md, "How it was chosen").

It sets batch size, learning rate and epochs (so --batch-size, --learning-rate and
--epochs do not apply with it). Measured in BENCHMARKS.md ("Time to accuracy").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from trainer.contract import BATCH_SIZE as REFERENCE_BATCH
from trainer.contract import LEARNING_RATE as REFERENCE_LEARNING_RATE

PROFILES = ("reference", "fast")


@dataclass(frozen=True)
class Recipe:
    """What a profile changes, per model; recorded in config.json as resolved."""

    batch_size: int  # GLOBAL
    lr_scaling: str  # "sqrt" or "linear" in batch_size / REFERENCE_BATCH
    epochs: int  # at most; early stopping may end sooner
    epoch_fraction: float  # of the training set per epoch (< 1: validate more often)
    warmup_fraction: float  # of the first epoch's steps
    final_lr_fraction: float  # cosine decay ends at this share of the peak rate
    validation_split: float  # share of the training reviews held out for early stopping
    patience: int  # epochs without a better validation accuracy before stopping

    @property
    def learning_rate(self) -> float:
        ratio = self.batch_size / REFERENCE_BATCH
        scale = math.sqrt(ratio) if self.lr_scaling == "sqrt" else ratio
        return REFERENCE_LEARNING_RATE * scale


FAST: dict[str, Recipe] = {
    "lstm": Recipe(
        batch_size=128,
        lr_scaling="linear",
        epochs=4,
        epoch_fraction=0.5,
        warmup_fraction=0.2,
        final_lr_fraction=0.1,
        validation_split=0.05,
        # Keras stops at the first epoch without a better accuracy when patience is 0 or 1;
        # 2 rides out one flat half pass (a tie on the small held-out share ended a seed at
        # 82 % after the first half pass).
        patience=2,
    ),
    "mean": Recipe(
        batch_size=512,
        lr_scaling="linear",
        epochs=5,
        epoch_fraction=1.0,
        warmup_fraction=0.1,
        final_lr_fraction=0.1,
        validation_split=0.05,
        patience=1,
    ),
}


def recipe(profile: str, model: str) -> Recipe | None:
    """The fast recipe for `model`, or None for the reference profile."""
    return FAST[model] if profile == "fast" else None


@dataclass(frozen=True)
class Plan:
    """What a run trains with, resolved once from its config: `cfg` with the profile's batch
    size, learning rate and epochs (the config as asked stays as it was), and the fast
    recipe's validation split, epoch length, schedule and early stopping, if any."""

    cfg: object  # the resolved TrainConfig
    fast: Recipe | None

    def describe(self) -> dict:
        """The resolved recipe for config.json: the profile and everything it decided."""
        r = self.fast
        if r is None:
            return {"profile": self.cfg.profile, "validation": "test set after every epoch"}
        return {
            "profile": self.cfg.profile,
            **dataclasses.asdict(r),
            "learning_rate": r.learning_rate,
            "validation": f"{r.validation_split:.0%} of the training reviews; test set at the end",
        }

    def split_validation(self, dataset):
        """(training dataset, held-out (x, y) or None): the reference validates on the test
        set; the fast recipe holds out the last share of the (shuffled) training set."""
        r = self.fast
        if r is None:
            return dataset, None
        n = len(dataset.y_train)
        held = max(1, int(round(n * r.validation_split)))
        train = dataclasses.replace(
            dataset, x_train=dataset.x_train[: n - held], y_train=dataset.y_train[: n - held]
        )
        return train, (dataset.x_train[n - held :], dataset.y_train[n - held :])

    def steps_per_epoch(self, train_examples: int) -> int | None:
        """Optimizer steps per Keras epoch: None (one pass, Keras counts) or the recipe's
        share of a pass; the training data then repeats (make_tf_datasets(even_batches))."""
        r = self.fast
        if r is None or r.epoch_fraction >= 1.0:
            return None
        return max(1, math.ceil(train_examples / self.cfg.batch_size * r.epoch_fraction))

    def learning_rate(self, steps_per_epoch: int):
        """The learning rate (reference), or the fast recipe's warm-up + cosine schedule."""
        r, cfg = self.fast, self.cfg
        if r is None:
            return cfg.learning_rate
        import tensorflow as tf

        keras = tf.keras  # honours TF_USE_LEGACY_KERAS, as trainer.models does

        warmup = max(1, int(steps_per_epoch * r.warmup_fraction))
        total = max(warmup + 1, steps_per_epoch * cfg.epochs)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate * r.final_lr_fraction,
            decay_steps=total - warmup,
            alpha=r.final_lr_fraction,
            warmup_target=cfg.learning_rate,
            warmup_steps=warmup,
        )

    def callbacks(self) -> list:
        """Early stopping on the held-out validation accuracy (fast recipe only)."""
        r = self.fast
        if r is None:
            return []
        import tensorflow as tf

        keras = tf.keras  # honours TF_USE_LEGACY_KERAS, as trainer.models does

        return [
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=r.patience, restore_best_weights=True
            )
        ]


def resolve(cfg) -> Plan:
    """The plan of a run of `cfg`: its profile's recipe, batch size, learning rate and
    epochs (the fast profile sets all three; --batch-size and friends do not apply)."""
    r = recipe(cfg.profile, cfg.model)
    if r is None:
        return Plan(cfg, None)
    resolved = dataclasses.replace(
        cfg, batch_size=r.batch_size, learning_rate=r.learning_rate, epochs=r.epochs
    )
    return Plan(resolved, r)
