"""The per-epoch callback: timings, TensorBoard scalars, one log line, a checkpoint per epoch,
and the checkpoint of an epoch cut short by SIGTERM."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from trainer.state import InEpoch, RunState
from trainer.termination import Termination

TRAIN_METRICS = ("loss", "accuracy")  # the running means an in-epoch checkpoint keeps


class StoppedInEpochError(Exception):
    """Raised out of fit() once an epoch cut short by SIGTERM is checkpointed: Keras would
    validate the partial model first, seconds that the grace period does not have."""

    def __init__(self, part: InEpoch) -> None:
        super().__init__(f"stopped at step {part.step} of epoch {part.epoch + 1}")
        self.part = part


class EpochEnd(tf.keras.callbacks.Callback):
    """Times each epoch, logs it for TensorBoard and the terminal, then checkpoints it; an
    epoch cut short by SIGTERM is checkpointed where it stopped (`in_epoch_checkpoint`).

    No batch hooks (see Termination): whether SIGTERM cut an epoch short is read from the
    optimizer's step counter, when fit() stops stepping and goes on to validation.

    Args:
        state: the run's history, appended to per completed epoch; `state.in_epoch` is the
            epoch cut short that this fit finishes first (its steps are not run again).
        termination: the SIGTERM flag.
        checkpoint: called as checkpoint(model, epoch) after each completed epoch.
        in_epoch_checkpoint: called as in_epoch_checkpoint(model, part) when SIGTERM cut
            an epoch short, before StoppedInEpochError ends fit().
        steps: optimizer steps in a whole epoch.
        batch_size: the global batch (examples per step, the last of a pass excepted).
        examples: training examples in a whole epoch.
        tensorboard_dir: where the train/validation scalars go.
        epochs: the run's total epochs (for the log line).
        log: prints one line; None when Keras shows a progress bar instead.
    """

    def __init__(
        self,
        state: RunState,
        termination: Termination,
        checkpoint: Callable[[tf.keras.Model, int], None],
        in_epoch_checkpoint: Callable[[tf.keras.Model, InEpoch], object],
        steps: int,
        batch_size: int,
        examples: int,
        tensorboard_dir: Path,
        epochs: int,
        log: Callable[[str], None] | None,
    ) -> None:
        super().__init__()
        self.state = state
        self.termination = termination
        self.checkpoint = checkpoint
        self.in_epoch_checkpoint = in_epoch_checkpoint
        self.steps = steps
        self.batch_size = batch_size
        self.examples = examples
        self.tensorboard_dir = tensorboard_dir
        self.epochs = epochs
        self.log = log
        self.part: InEpoch | None = None  # the resumed epoch's first part, while it runs

    def on_train_begin(self, logs=None):
        self.writers = {
            split: tf.summary.create_file_writer(str(self.tensorboard_dir / split))
            for split in ("train", "validation")
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.epoch = epoch
        self.step0 = int(self.model.optimizer.iterations.numpy())
        part = self.state.in_epoch
        self.part = part if part is not None and part.epoch == epoch else None

    def _steps_done(self) -> int:
        """Steps of the current epoch done, its checkpointed first part included."""
        done = int(self.model.optimizer.iterations.numpy()) - self.step0
        return done + (self.part.step if self.part else 0)

    def _stop_in_epoch(self) -> None:
        """If SIGTERM cut this epoch short: checkpoint it where it stopped, end fit()."""
        step = self._steps_done()
        if not self.termination.stopping or step >= self.steps:
            return  # not stopping, or the epoch is whole: validated and checkpointed as usual
        done = step - (self.part.step if self.part else 0)
        seconds = time.perf_counter() - self.t0
        # Every train metric is a mean over examples: a later stop in the same epoch
        # merges with the first part's, as the epoch's end does.
        now = self.model.get_metrics_result()
        logs = {k: float(now[k]) for k in TRAIN_METRICS if k in now}
        examples = min(done * self.batch_size, self.examples)
        if self.part is not None:
            logs = self.part.merged(logs, examples)
            seconds += self.part.seconds
            examples += self.part.examples
        part = InEpoch(
            epoch=self.epoch,
            step=step,
            steps=self.steps,
            # Batches of the training stream used since the run began: one per step.
            position=int(self.model.optimizer.iterations.numpy()),
            seconds=round(seconds, 3),
            examples=examples,
            logs=logs,
        )
        if done:  # nothing new since the checkpoint this fit started from: keep that one
            self.in_epoch_checkpoint(self.model, part)
        raise StoppedInEpochError(part)

    def on_test_begin(self, logs=None):
        # fit() validates after a mid-epoch stop: checkpoint before that, and skip it.
        self._stop_in_epoch()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_in_epoch()  # no validation this epoch: stopped here
        seconds = time.perf_counter() - self.t0
        logs = logs or {}
        if self.part is not None:
            # The epoch's first part ran before the preemption: the epoch's figures are
            # both parts', as if it had never stopped.
            rest = self.examples - self.part.examples
            logs = self.part.merged(logs, rest)
            seconds += self.part.seconds
            self.state.in_epoch = self.part = None
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
