"""The per-epoch callback: timings, TensorBoard scalars, one log line, a checkpoint per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from trainer.state import RunState
from trainer.termination import Termination


class EpochEnd(tf.keras.callbacks.Callback):
    """Times each epoch, logs it for TensorBoard and the terminal, then checkpoints it.

    No batch hooks (see Termination): whether SIGTERM cut an epoch short is read from the
    optimizer's step counter instead.

    Args:
        state: the run's history, appended to per completed epoch.
        termination: the SIGTERM flag; a cut-short epoch is never checkpointed.
        checkpoint: called as checkpoint(model, epoch) after each completed epoch.
        tensorboard_dir: where the train/validation scalars go.
        epochs: the run's total epochs (for the log line).
        log: prints one line; None when Keras shows a progress bar instead.
    """

    def __init__(
        self,
        state: RunState,
        termination: Termination,
        checkpoint: Callable[[tf.keras.Model, int], None],
        tensorboard_dir: Path,
        epochs: int,
        log: Callable[[str], None] | None,
    ) -> None:
        super().__init__()
        self.state = state
        self.termination = termination
        self.checkpoint = checkpoint
        self.tensorboard_dir = tensorboard_dir
        self.epochs = epochs
        self.log = log

    def on_train_begin(self, logs=None):
        self.writers = {
            split: tf.summary.create_file_writer(str(self.tensorboard_dir / split))
            for split in ("train", "validation")
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.step0 = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.t0
        steps = self.params.get("steps")
        done = int(self.model.optimizer.iterations.numpy()) - self.step0
        if self.termination.stopping and (steps is None or done < steps):
            # Keras still validates and calls us after a mid-epoch stop; a partial epoch
            # must not be checkpointed as complete.
            return
        logs = logs or {}
        diverged = sorted(k for k in ("loss", "val_loss")
                          if k in logs and not math.isfinite(float(logs[k])))  # fmt: skip
        if diverged:
            # Never checkpointed, never promoted: the last finite epoch stays the resume point.
            from trainer.termination import DivergedError

            raise DivergedError(
                f"training diverged: {diverged[0]} is {float(logs[diverged[0]])} after epoch "
                f"{epoch + 1}, which is not checkpointed"
                f"{f' (epoch {epoch} is)' if epoch else ''}; lower --learning-rate and start a "
                "new run id"
            )
        self.state.add_epoch(seconds, logs)
        self._scalars(epoch, logs)
        if self.log is not None:
            metrics = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            self.log(f"epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {metrics}")
        self.checkpoint(self.model, epoch + 1)
        if self.termination.stopping:
            self.model.stop_training = True  # arrived during validation

    def _scalars(self, epoch: int, logs: dict) -> None:
        for split, writer in self.writers.items():
            prefix = "val_" if split == "validation" else ""
            with writer.as_default(step=epoch):
                for name in ("loss", "accuracy"):
                    if prefix + name in logs:
                        tf.summary.scalar(f"epoch_{name}", logs[prefix + name])
            writer.flush()


class GroupStop(tf.keras.callbacks.Callback):
    """A worker group's agreement to stop: every worker stops after the same step.

    After each compiled call (steps_per_execution steps) and each epoch, the workers
    all-reduce their stop flags; if any was signalled (a preempted pod: Kubernetes signals
    only that one), all stop there. A worker stopping alone would leave its peers in the
    next step's all-reduce until the collective timeout. Being the first callback, it
    decides before EpochEnd reads `termination.stopping`; being a batch hook, it makes
    Keras sync once per compiled call, which only a group pays for.
    """

    def __init__(self, strategy, termination: Termination) -> None:
        super().__init__()
        self.termination = termination

        def signalled(flag):
            # One value per replica, summed over the group (an all-reduce of one scalar).
            flags = strategy.experimental_distribute_values_from_function(lambda _: flag)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)

        self._signalled = signalled

    def agree(self) -> bool:
        """Whether the group stops: one all-reduce, which every worker must call alike."""
        # Once agreed, every worker has agreed (same all-reduce): no more collectives.
        if not self.termination.agreed:
            flag = tf.constant(1.0 if self.termination.requested else 0.0)
            self.termination.agreed = float(self._signalled(flag)) > 0
        return self.termination.agreed

    def _agree(self) -> None:
        if self.agree():
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._agree()

    def on_epoch_end(self, epoch, logs=None):
        self._agree()
