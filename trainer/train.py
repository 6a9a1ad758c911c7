"""A training run: data -> strategy -> model -> fit with a checkpoint per epoch -> publish.

A run lives under `<output>/<model>/<run-id>/` and is complete only once `_SUCCESS` is
there (written last, create-only). Starting the same run id again resumes from the last
completed epoch's checkpoint. Publishing is trainer/artifacts.py, the gate and the move of
`latest.json` trainer/promotion.py.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from trainer import checkpoints, contract, cost, distribute, manifest, phases, profiles, quiet
from trainer import data as data_mod
from trainer.artifacts import FinishedRun, publish
from trainer.config import ConfigError, TrainConfig, resume_keys
from trainer.lease import Lease, LeaseHeldError, lease_seconds
from trainer.promotion import promote, to_json
from trainer.state import RunState
from trainer.storage import NotFoundError, Store, StoreError, open_store
from trainer.termination import (
    GroupStoppedError,
    PreemptedError,
    RetryableError,
    Termination,
)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in (
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "tf-keras",
        "numpy",
        "google-cloud-storage",
        "imdb-train",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def provenance() -> dict:
    """What trained this run: the image the pod ran, the source revision and the lock
    baked into it (build.json, from the Dockerfile), or that it ran outside an image."""
    path = Path(os.environ.get(contract.BUILD_INFO_ENV) or contract.BUILD_INFO_PATH)
    try:
        build = json.loads(path.read_text())
        if not isinstance(build, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        reason = "no " + str(path) if isinstance(e, FileNotFoundError) else f"{path}: {e}"
        return {"in_image": False, "note": f"trained outside an image ({reason})"}
    keep = ("revision", "created", "version", "source", "lock", "lock_sha256")
    return {
        "in_image": True,
        "image": os.environ.get(contract.IMAGE_REF_ENV) or None,
        **{k: build.get(k) for k in keep},
    }


def keras_flavour() -> str:
    return "tf-keras" if os.environ.get(contract.LEGACY_KERAS_ENV) == "1" else "keras3"


def check_resumable(store: Store, cfg: TrainConfig) -> None:
    """Refuse (bad input) to continue a run id that was started with other settings."""
    try:
        doc = json.loads(store.read_bytes(contract.CONFIG))
    except NotFoundError:
        return
    except (ValueError, RecursionError) as e:  # truncated, not UTF-8, nested past the parser
        raise ConfigError(
            f"{store.uri}/{contract.CONFIG} is damaged ({type(e).__name__}), so run "
            f"{cfg.run_id!r} cannot be resumed safely: pass another --run-id"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ConfigError(
            f"{store.uri}/{contract.CONFIG} is not a run config this trainer wrote, so run "
            f"{cfg.run_id!r} cannot be resumed safely: pass another --run-id"
        )
    previous, now = doc["config"], cfg.to_dict()
    keys = [k for k in resume_keys() if previous.get(k) != now[k]]
    diffs = [f"{k}: {previous.get(k)!r} -> {now[k]!r}" for k in keys]
    # Checkpoints are files of the Keras that wrote them, and neither Keras loads the
    # other's: one process trains with Keras 3, a multi-worker group with tf-keras.
    if doc.get("keras", keras_flavour()) != keras_flavour():
        diffs.append(f"keras: {doc['keras']!r} -> {keras_flavour()!r}, one process vs a group")
    if diffs:
        raise ConfigError(
            f"run {cfg.run_id!r} already exists in {store.uri} with other settings "
            f"({'; '.join(diffs)}): pass another --run-id"
        )


class Trainer:
    """One training run of one model variant."""

    def __init__(
        self,
        cfg: TrainConfig,
        termination: Termination | None = None,
        log=print,
        store: Store | None = None,
    ) -> None:
        if not cfg.run_id:
            cfg.run_id = contract.new_run_id()
        cfg.resolve_seed()
        # The profile, resolved once: self.cfg is what the run trains with (the fast
        # profile's batch size, learning rate and epochs), self.plan the rest of its recipe.
        self.plan = profiles.resolve(cfg)
        self.cfg = cfg = self.plan.cfg
        self.log = log
        self.termination = termination or Termination().install()
        # The store's root, opened (and probed) by the entrypoint; opened here for callers
        # that start a run themselves.
        self.model_store = (store or open_store(cfg.output)).child(cfg.model)
        self.store = self.model_store.child(cfg.run_id)
        self.chief = distribute.is_chief()
        self.lease: Lease | None = None
        # Read now: a lease period out of bounds is bad input before the data is read.
        self.lease_seconds = lease_seconds()

    def run(self) -> dict:
        cfg = self.cfg
        check_resumable(self.store, cfg)
        if self.store.exists(contract.SUCCESS):
            return self._already_complete()
        dataset = self._load()  # bad data is refused before anything is written
        phases.mark("data_loaded")
        # Only now: a run that is complete, resumed with other settings or given bad data
        # says so in a fraction of a second instead of after TensorFlow's 3 s import.
        quiet.import_tensorflow()
        phases.mark("tensorflow_imported")
        # Before the lease: a worker group that does not form in time stops resumable
        # (distribute.wait_for_peers) and must not leave the run's lease behind.
        self.strategy = self._make_strategy()
        phases.mark("strategy_ready")
        # One trainer per run id: a second one waits for a silent holder's lease to expire
        # (a killed pod), or stops resumable while a live one trains.
        lease = Lease(self.store, self.lease_seconds, log=self.log) if self.chief else None
        self.lease = lease
        try:
            if lease is not None:
                lease.acquire()
                # A writer killed mid-write (SIGKILL while publishing) leaves its temp file.
                stray = self.store.remove_stray_temp()
                if stray:
                    self.log(f"removed {stray} temp files an interrupted attempt left")
        except LeaseHeldError as e:
            raise RetryableError(str(e)) from e
        try:
            if self.store.exists(contract.SUCCESS):  # the holder before us finished it
                return self._already_complete()
            return self._train_in_workdir(dataset)
        finally:
            if lease is not None:
                lease.release()

    def _already_complete(self) -> dict:
        self.log(f"run {self.cfg.run_id} is already complete in {self.store.uri}")
        raw = self.store.read_bytes(contract.METRICS)
        # Promoted on what the run published, not on a metrics.json edited or copied since.
        manifest.check(self.store, manifest.read(self.store), contract.METRICS, raw)
        metrics = json.loads(raw)
        # A run that finished but was not promoted (a bad latest.json, a crash between
        # _SUCCESS and the pointer) gets its promotion now; an idempotent no-op otherwise.
        return self._promote(metrics)

    def _load(self) -> data_mod.Dataset:
        cfg = self.cfg
        # A SIGTERM while the data is read and encoded stops at once (exit 75).
        with self.termination.stop_at_once(f"rerun with --run-id {cfg.run_id} to resume"):
            dataset = data_mod.load(
                cfg.data, cfg.vocab_size, cfg.max_review_length, cfg.sample, cfg.cache_dir or None
            )
        self.log(
            f"data: {len(dataset.y_train)} train / {len(dataset.y_test)} test reviews "
            f"from {cfg.data}{' (cache)' if dataset.from_cache else ''}"
        )
        return dataset

    def _train_in_workdir(self, dataset: data_mod.Dataset) -> dict:
        cfg = self.cfg
        with tempfile.TemporaryDirectory(prefix="imdb-train-") as tmp:
            try:
                return self._train(dataset, Path(tmp))
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # The local scratch volume (the pod's emptyDir) is full: what is in the store
                # is intact, and a new pod starts with an empty volume.
                raise RetryableError(
                    f"no space left on the local disk ({e.filename or tmp}): free space or "
                    f"give the pod a larger /tmp volume, then rerun with --run-id {cfg.run_id} "
                    "to resume from the last checkpoint"
                ) from e
            except StoreError as e:
                # The store answered at the start, so this is an outage mid-run, not bad
                # input: what is checkpointed is safe and a rerun resumes from it.
                raise RetryableError(
                    f"{e}; rerun with --run-id {cfg.run_id} to resume from the last checkpoint"
                ) from e

    def _train(self, dataset: data_mod.Dataset, workdir: Path) -> dict:
        import tensorflow as tf

        cfg = self.cfg
        # The fast recipe validates on a share of the training set (the reference on test).
        dataset, held_out = self.plan.split_validation(dataset)
        strategy = self.strategy
        tf.keras.utils.set_random_seed(cfg.seed)
        self._write_config(strategy, dataset)
        # Steps per epoch: a share of a pass (fast recipe), or full batches only (a worker
        # group, whose collectives need equal shapes); None: one pass, Keras counts.
        part = self.plan.steps_per_epoch(len(dataset.y_train))
        even = part is not None or distribute.is_multi_worker()

        def pipelines():
            return data_mod.make_tf_datasets(
                dataset, cfg.batch_size, cfg.seed, cfg.eval_batch_size, even_batches=even
            )

        _, test_ds, full = pipelines()
        steps = part or full
        schedule_steps = steps or -(-len(dataset.y_train) // cfg.batch_size)
        with strategy.scope():
            model, epoch, state = self._restore_or_build(workdir, schedule_steps)
        phases.mark("model_ready")
        if self.chief:  # for metrics.json's cost: restarts and the training they redid
            cost.record_attempt(self.store, epoch)
        val_ds = test_ds
        if held_out is not None:
            val_ds = tf.data.Dataset.from_tensor_slices(held_out).batch(cfg.eval_batch_size)
        group_stop = None
        if self.termination.group:
            from trainer.callbacks import GroupStop

            group_stop = GroupStop(strategy, self.termination)
            # A signal since the group formed: every worker stops here, together, rather
            # than the signalled one alone while its peers go on into fit's collectives.
            group_stop.agree()
        examples = steps * cfg.batch_size if steps else len(dataset.y_train)
        stream = Stream(lambda: pipelines()[0], schedule_steps, repeats=steps is not None)
        cut = None
        if epoch < cfg.epochs and not self.termination.stopping:
            cut = self._fit(model, stream, val_ds, epoch, state, workdir, examples, group_stop)
        if self.termination.stopping:
            stopped = PreemptedError if self.termination.requested else GroupStoppedError
            if cut is not None:
                where = (
                    f"in epoch {cut.epoch + 1} of {cfg.epochs} after step {cut.step} of "
                    f"{cut.steps} (checkpointed)"
                )
            else:
                done = next(iter(checkpoints.epochs(self.store)), 0)
                where = f"after epoch {done} of {cfg.epochs}"
            raise stopped(
                f"stopped by {self.termination.why()} {where}; rerun with --run-id "
                f"{cfg.run_id} to resume"
            )
        phases.mark("trained")
        test_loss, test_acc = model.evaluate(test_ds, verbose=0)
        phases.mark("tested")
        run = FinishedRun(
            cfg=cfg,
            model=model,
            dataset=dataset,
            state=state,
            replicas=strategy.num_replicas_in_sync,
            test_loss=float(test_loss),
            test_accuracy=float(test_acc),
            workdir=workdir,
            chief=self.chief,
            final_accuracy_at=phases.marks["tested"],
            phases=dict(phases.marks),
        )
        return self._finish(run)

    def _make_strategy(self):
        strategy = distribute.form_group(self.termination, self.cfg.cpu_devices, self.cfg.run_id)
        # TensorFlow's multi-worker runtime installs its own SIGTERM handler as the group
        # forms, over ours (installed before the data was read): ours again.
        self.termination.install()
        return strategy

    def _write_config(self, strategy, dataset: data_mod.Dataset) -> None:
        cfg = self.cfg
        replicas = strategy.num_replicas_in_sync
        doc = {
            "config": cfg.to_dict(),
            "batch_size_semantics": "global (examples per optimizer step, all replicas)",
            "per_replica_batch_size": cfg.batch_size / replicas,
            "replicas": replicas,
            "strategy": type(strategy).__name__,
            # What it trained on (GPUs, driver, CUDA/cuDNN as TensorFlow reports them).
            "devices": distribute.devices(),
            "data": {"source": cfg.data, "sha256": dataset.sha256, **dataset.stats},
            "encoding": data_mod.encoding_doc(),  # read back by trainer.predict
            "versions": _versions(),
            "build": provenance(),
            "keras": keras_flavour(),
            "recipe": self.plan.describe(),  # the resolved profile
        }
        if self.chief and not self.store.exists(contract.CONFIG):
            self.store.write_bytes(contract.CONFIG, to_json(doc), if_absent=True)

    def _restore_or_build(self, workdir: Path, steps_per_epoch: int):
        """(model, epochs done, state): the newest readable checkpoint's, or a new model.
        Call under the strategy's scope."""
        from trainer import models

        cfg = self.cfg
        restored = checkpoints.restore_newest(self.store, workdir, self.log)
        if restored is not None:
            part = restored[2].in_epoch
            if part is None:
                self.log(f"resuming run {cfg.run_id} after epoch {restored[1]} of {cfg.epochs}")
            elif part.steps != steps_per_epoch:
                raise ConfigError(
                    f"run {cfg.run_id} was stopped at step {part.step} of {part.steps} in "
                    f"epoch {part.epoch + 1}, but its epochs now have {steps_per_epoch} steps: "
                    "pass another --run-id"
                )
            else:
                self.log(
                    f"resuming run {cfg.run_id} in epoch {part.epoch + 1} of {cfg.epochs} "
                    f"from step {part.step} of {part.steps}"
                )
            return restored
        model = models.build_model(cfg.model, cfg)
        lr = self.plan.learning_rate(steps_per_epoch)  # a schedule for the fast recipe
        return models.compile_model(model, cfg, lr), 0, RunState()

    def _fit(
        self,
        model,
        stream: Stream,
        val_ds,
        initial_epoch: int,
        state: RunState,
        workdir: Path,
        examples: int,
        group_stop=None,
    ):
        """Train from `initial_epoch` (and, resuming inside it, from `state.in_epoch`'s
        step) to the last epoch; the InEpoch where SIGTERM stopped it, or None."""
        from trainer.callbacks import EpochEnd, StoppedInEpochError

        cfg = self.cfg
        interactive = sys.stdout.isatty()
        # One process: the signal handler stops fit() itself. A group agrees first.
        group = [group_stop] if group_stop is not None else []
        if not group:
            self.termination.model = model
        self.termination.install()  # again, in case TensorFlow replaced it since
        epoch_end = EpochEnd(
            state=state,
            termination=self.termination,
            checkpoint=self._checkpoint(state, workdir),
            in_epoch_checkpoint=lambda m, part: checkpoints.save_in_epoch(
                m, part, state, workdir, self.store, self.chief, self.log
            ),
            steps=stream.steps,
            batch_size=cfg.batch_size,
            examples=examples,
            tensorboard_dir=workdir / contract.TENSORBOARD_DIR,
            epochs=cfg.epochs,
            log=None if interactive else self.log,
        )
        # Resuming inside an epoch: its rest first, in a fit of its own (Keras's epochs
        # all have the same number of steps), then the epochs after it.
        part = state.in_epoch
        first = initial_epoch + 1 if part is not None else cfg.epochs
        legs = [(initial_epoch, first), (first, cfg.epochs)] if part else [(initial_epoch, first)]
        try:
            for begin, end in legs:
                if begin >= end or self.termination.stopping:
                    break
                step = part.step if part is not None and begin == initial_epoch else 0
                position = int(model.optimizer.iterations.numpy())
                model.fit(
                    stream.at(begin, step, position),
                    validation_data=val_ds,
                    epochs=end,
                    initial_epoch=begin,
                    steps_per_epoch=stream.steps - step if stream.repeats else None,
                    callbacks=[*group, epoch_end, *self.plan.callbacks()],
                    # A progress bar on a terminal; in a pod's log one line per epoch
                    # (EpochEnd): Keras's verbose=2 reads every step's metrics back.
                    verbose=1 if interactive else 0,
                )
                if model.stop_training:
                    break  # early stopping (the fast recipe) ended the run in the first leg
        except StoppedInEpochError as e:
            return e.part
        return None

    def _checkpoint(self, state: RunState, workdir: Path):
        def checkpoint(model, epoch: int) -> None:
            checkpoints.save(model, epoch, state, workdir, self.store, self.chief, self.log)
            # The epoch's own checkpoint supersedes any taken inside it.
            checkpoints.drop_in_epoch(self.store, self.chief)

        return checkpoint

    def _finish(self, run: FinishedRun) -> dict:
        cfg = self.cfg
        if self.lease is not None:
            self.lease.check()  # a run no longer ours is not published by us
        metrics, neighbours = publish(run, self.store)
        self.log(
            f"\n{cfg.model} run {cfg.run_id}: test accuracy {run.test_accuracy:.4f} "
            f"(loss {run.test_loss:.4f}) after {metrics['epochs_completed']} epochs "
            f"on {run.replicas} replica(s)"
        )
        # Machine-readable, printed by every worker: evaluate() all-reduces, so they agree.
        final = {k: metrics[k] for k in ("run_id", "test_accuracy", "test_loss", "replicas")}
        self.log("final: " + json.dumps({**final, "chief": self.chief}))
        great = neighbours["queries"].get("great")
        # Only the mean model's embedding is trained to carry sentiment; the LSTM's is its
        # input layer, and its neighbours read as noise (they stay in neighbours.json).
        if great is not None and cfg.model == contract.NEIGHBOURS_MODEL:
            self.log("nearest to 'great': " + ", ".join(n["word"] for n in great))
        if neighbours["unknown"]:
            unknown = ", ".join(neighbours["unknown"])
            self.log(f"warning: not in the vocabulary, no neighbours: {unknown}")
        self.log(f"artifacts: {self.store.uri}")
        return self._promote(metrics)

    def _promote(self, metrics: dict) -> dict:
        if self.chief and self.cfg.promote:
            decision = promote(self.cfg, metrics, self.model_store)
            verdict = "promoted to" if decision.promoted else "NOT promoted to"
            self.log(f"{verdict} {self.model_store.uri}/{contract.LATEST}: {decision.reason}")
            metrics["promotion"] = decision.to_dict()
        return metrics


# Iterators Keras 3's fit() makes per epoch of a pipeline that ends with each pass (Stream).
ITERATORS_PER_EPOCH = 2


class Stream:
    """The training data as an uninterrupted run sees it, from any epoch and step on.

    The pipeline reshuffles on each pass: each iterator made of one pipeline (and each pass
    of one that repeats) takes the seed's next order, and a fresh pipeline starts at the
    first. A resumed run builds a fresh one and moves it to where the checkpoint stopped;
    the pipeline itself (trainer.data) is not told. Keras 3's fit() makes one iterator
    before the first epoch and two per epoch of a pipeline that ends with each pass (one
    at the epoch's end, which it drops): an uninterrupted run's epoch k takes order 2k + 1,
    so a resume at epoch k makes 2k first. Of an endless stream it keeps one iterator over
    all epochs: a resume skips the batches used. tests/test_resume.py checks both against
    an uninterrupted run.

    Args:
        make: builds a fresh training pipeline (batched at the global batch).
        steps: steps (batches) in one epoch.
        repeats: the pipeline is one endless stream over all epochs (a worker group's even
            batches, or the fast recipe's share of a pass); otherwise one pass per epoch.
    """

    def __init__(self, make: Callable[[], object], steps: int, repeats: bool) -> None:
        self.make, self.steps, self.repeats = make, steps, repeats

    def at(self, epoch: int, step: int, position: int):
        """The data from `step` of epoch `epoch` on; `position`: batches of the stream
        already used (the optimizer's steps, one batch each)."""
        ds = self.make()
        if self.repeats:
            # Keras keeps one iterator over an endless stream across epochs.
            return ds.skip(position) if position else ds
        for _ in range(ITERATORS_PER_EPOCH * epoch):
            iter(ds)  # each iterator made takes the next order
        return ds.skip(step) if step else ds


def train(
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
    termination: Termination | None = None,
    store: Store | None = None,
) -> dict:
    """Run one training job to completion (or raise PreemptedError)."""
    return Trainer(cfg, termination=termination, log=log, store=store).run()
