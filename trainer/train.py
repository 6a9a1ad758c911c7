"""Training run: data -> strategy -> model -> fit with per-epoch checkpoints -> artifacts.

A run lives under `<output>/<model>/<run-id>/` and is complete only once `_SUCCESS` is
there (written last, create-only). Starting the same run id again resumes from the last
completed epoch's checkpoint. `<output>/<model>/latest.json` points at the promoted run
and moves by compare-and-swap through a quality gate (see promote()).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from trainer import data as data_mod
from trainer import distribute, profiles
from trainer.config import ConfigError, TrainConfig
from trainer.neighbours import nearest
from trainer.storage import AlreadyExistsError, NotFoundError, Store, StoreError, open_store

SUCCESS = "_SUCCESS"
LATEST = "latest.json"
CKPT_DIR = "checkpoints"
CKPT_RE = re.compile(r"^checkpoints/epoch-(\d{4})\.keras$")
RESERVED = {0: "<pad>", 1: "<start>", 2: "<oov>", 3: "<unused>"}
# Keys that must match when a run id is started again (anything else may differ).
RESUME_KEYS = (
    "model",
    "data",
    "epochs",
    "batch_size",
    "vocab_size",
    "max_review_length",
    "embedding_dim",
    "lstm_units",
    "learning_rate",
    "seed",
    "sample",
)


class RetryableError(Exception):
    """The run stopped at its last checkpoint and resumes when started again (exit 75)."""


class PreemptedError(RetryableError):
    """SIGTERM arrived: the run stopped at a checkpoint and can be resumed."""


class Termination:
    """Turns SIGTERM/SIGINT into a flag plus a stop request to the running model (PID 1
    ignores SIGTERM unless a handler is installed).

    The handler sets `model.stop_training` itself, so no per-batch callback is needed:
    a batch hook would turn off Keras's asynchronous callback dispatch and cost every step.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.model = None  # the model whose fit() should stop

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        if self.model is not None:
            self.model.stop_training = True
        print(
            f"received {signal.Signals(signum).name}: stopping after this batch, checkpointing",
            file=sys.stderr,
            flush=True,
        )

    @property
    def requested(self) -> bool:
        return self.event.is_set()


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


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


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def run_store(cfg: TrainConfig) -> Store:
    return open_store(cfg.output).child(cfg.model, cfg.run_id)


def _latest_checkpoint(store: Store) -> tuple[int, str] | None:
    best = None
    for key in store.list(CKPT_DIR):
        m = CKPT_RE.match(key)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), key)
    return best


def _keras_flavour() -> str:
    return "tf-keras" if os.environ.get("TF_USE_LEGACY_KERAS") == "1" else "keras3"


def _check_resumable(store: Store, cfg: TrainConfig) -> None:
    try:
        doc = json.loads(store.read_bytes("config.json"))
    except NotFoundError:
        return
    previous = doc["config"]
    diffs = [
        f"{k}: {previous.get(k)!r} -> {cfg.to_dict()[k]!r}"
        for k in RESUME_KEYS
        if previous.get(k) != cfg.to_dict()[k]
    ]
    # Checkpoints are files of the Keras that wrote them, and neither Keras loads the
    # other's: one process trains with Keras 3, a multi-worker group with tf-keras.
    if doc.get("keras", _keras_flavour()) != _keras_flavour():
        diffs.append(f"keras: {doc['keras']!r} -> {_keras_flavour()!r}, one process vs a group")
    if diffs:
        raise ConfigError(
            f"run {cfg.run_id!r} already exists in {store.uri} with other settings "
            f"({'; '.join(diffs)}): pass another --run-id"
        )


def write_embedding(workdir: Path, vectors: np.ndarray, id_to_word: dict[int, str]) -> None:
    """TensorBoard projector files: one vector and one label per word id."""
    emb = workdir / "embedding"
    emb.mkdir(parents=True, exist_ok=True)
    np.savetxt(emb / "vectors.tsv", vectors, delimiter="\t", fmt="%.6f")
    labels = [id_to_word.get(i, RESERVED.get(i, f"<id {i}>")) for i in range(len(vectors))]
    (emb / "metadata.tsv").write_text("\n".join(labels) + "\n", encoding="utf-8")


def plot_curves(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history.get(metric, []), "o-", label=f"train {metric}")
        ax.plot(epochs, history.get(f"val_{metric}", []), "s--", label=f"test {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_xticks(list(epochs))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def promote(cfg: TrainConfig, metrics: dict, model_store: Store, attempts: int = 20) -> dict:
    """Move `<output>/<model>/latest.json` to this run if it passes the quality gate.

    The gate: test accuracy >= cfg.min_accuracy and >= current latest - cfg.tolerance.
    The pointer moves by compare-and-swap, so of concurrent publishers each round has
    exactly one winner and no update is lost; losers re-read and re-judge.

    Returns:
        {"promoted": bool, "reason": str, "previous": {...} | None}
    """
    acc = float(metrics["test_accuracy"])
    for _ in range(attempts):
        raw, version = model_store.read_versioned(LATEST)
        current = json.loads(raw) if raw else None
        if current and current.get("run_id") == cfg.run_id:
            return {"promoted": True, "reason": "already the latest run", "previous": current}
        if acc < cfg.min_accuracy:
            return {
                "promoted": False,
                "previous": current,
                "reason": f"test accuracy {acc:.4f} is below the floor {cfg.min_accuracy:.4f}",
            }
        if current and acc < float(current["test_accuracy"]) - cfg.tolerance:
            return {
                "promoted": False,
                "previous": current,
                "reason": f"test accuracy {acc:.4f} is worse than latest run "
                f"{current['run_id']} ({float(current['test_accuracy']):.4f}) by "
                f"more than the tolerance {cfg.tolerance:.4f}",
            }
        pointer = {
            "run_id": cfg.run_id,
            "model": cfg.model,
            "test_accuracy": acc,
            "test_loss": metrics.get("test_loss"),
            "uri": f"{model_store.uri}/{cfg.run_id}",
            "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "previous_run_id": current.get("run_id") if current else None,
        }
        if model_store.write_versioned(LATEST, _json(pointer), version):
            return {
                "promoted": True,
                "previous": current,
                "reason": "first run"
                if not current
                else f"test accuracy {acc:.4f} vs {float(current['test_accuracy']):.4f}",
            }
        time.sleep(0.05 + secrets.randbelow(100) / 1000)
    return {
        "promoted": False,
        "previous": None,
        "reason": f"latest.json kept changing; gave up after {attempts} attempts",
    }


class Trainer:
    """One training run of one model variant."""

    def __init__(self, cfg: TrainConfig, termination: Termination | None = None, log=print) -> None:
        if not cfg.run_id:
            cfg.run_id = new_run_id()
        self.cfg = cfg
        self.log = log
        self.termination = termination or Termination()
        self.model_store = open_store(cfg.output).child(cfg.model)
        self.store = self.model_store.child(cfg.run_id)
        self.chief = distribute.is_chief()

    # ------------------------------------------------------------------ helpers
    def _put(self, key: str, data: bytes, **kw) -> None:
        if self.chief:
            self.store.write_bytes(key, data, **kw)

    def _upload_tree(self, local: Path, prefix: str) -> None:
        if not self.chief or not local.exists():
            return
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.store.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        cfg = self.cfg
        _check_resumable(self.store, cfg)
        if self.store.exists(SUCCESS):
            self.log(f"run {cfg.run_id} is already complete in {self.store.uri}; nothing to do")
            return json.loads(self.store.read_bytes("metrics.json"))
        dataset = data_mod.load(
            cfg.data, cfg.vocab_size, cfg.max_review_length, cfg.sample, cfg.cache_dir or None
        )
        self.log(
            f"data: {len(dataset.y_train)} train / {len(dataset.y_test)} test reviews "
            f"from {cfg.data}{' (cache)' if dataset.from_cache else ''}"
        )
        with tempfile.TemporaryDirectory(prefix="imdb-train-") as tmp:
            try:
                return self._train(dataset, Path(tmp))
            except StoreError as e:
                # The store answered at the start, so this is an outage mid-run, not bad
                # input: what is checkpointed is safe and a rerun resumes from it.
                raise RetryableError(
                    f"{e}; rerun with --run-id {cfg.run_id} to resume from the last checkpoint"
                ) from e

    def _train(self, dataset: data_mod.Dataset, workdir: Path) -> dict:
        import tensorflow as tf

        from trainer import models

        cfg = self.cfg
        # Profile hook: the fast recipe validates on a share of the training set.
        dataset, held_out = profiles.split_validation(dataset, cfg)
        strategy = distribute.make_strategy(cfg.cpu_devices)
        replicas = strategy.num_replicas_in_sync
        tf.keras.utils.set_random_seed(cfg.seed)
        config_doc = {
            "config": cfg.to_dict(),
            "batch_size_semantics": "global (examples per optimizer step, all replicas)",
            "per_replica_batch_size": cfg.batch_size / replicas,
            "replicas": replicas,
            "strategy": type(strategy).__name__,
            "data": {"source": cfg.data, "sha256": dataset.sha256, **dataset.stats},
            "versions": _versions(),
            "keras": _keras_flavour(),
            "recipe": profiles.describe(cfg),  # profile hook: the resolved recipe
        }
        if not self.store.exists("config.json"):
            self._put("config.json", _json(config_doc), if_absent=True)

        # Resume: the newest completed epoch's checkpoint carries weights and optimizer.
        state = {"history": {}, "epoch_seconds": []}
        latest = _latest_checkpoint(self.store)
        with strategy.scope():
            if latest:
                epoch, key = latest
                local = workdir / "resume.keras"
                self.store.download_file(key, local)
                model = tf.keras.models.load_model(local)
                state = json.loads(self.store.read_bytes(f"{CKPT_DIR}/state-{epoch:04d}.json"))
                self.log(f"resuming run {cfg.run_id} after epoch {epoch} of {cfg.epochs}")
            else:
                epoch = 0
                steps = profiles.steps_per_epoch(cfg, len(dataset.y_train))
                steps = steps or -(-len(dataset.y_train) // cfg.batch_size)
                lr = profiles.learning_rate(cfg, steps)  # profile hook: schedule or constant
                model = models.compile_model(models.build_model(cfg.model, cfg), cfg, lr)
        initial_epoch = epoch

        train_ds, test_ds = data_mod.make_tf_datasets(
            dataset, cfg.batch_size, cfg.seed, cfg.eval_batch_size
        )
        train_ds = profiles.repeat(train_ds, cfg)  # profile hook: epochs of part of a pass
        val_ds = test_ds  # profile hook: the held-out training share, if any
        if held_out is not None:
            val_ds = tf.data.Dataset.from_tensor_slices(held_out).batch(cfg.eval_batch_size)
        tb_dir = workdir / "tensorboard"
        trainer = self

        interactive = sys.stdout.isatty()

        class EpochEnd(tf.keras.callbacks.Callback):
            """Times epochs, logs them for TensorBoard, checkpoints each one to the store.

            No batch hooks (see Termination): whether SIGTERM cut an epoch short is read
            from the optimizer's step counter instead.
            """

            def on_train_begin(self, logs=None):
                self.writers = {
                    split: tf.summary.create_file_writer(str(tb_dir / split))
                    for split in ("train", "validation")
                }

            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()
                self.step0 = int(self.model.optimizer.iterations.numpy())

            def on_epoch_end(self, epoch, logs=None):
                seconds = time.perf_counter() - self.t0
                steps = self.params.get("steps")
                done = int(self.model.optimizer.iterations.numpy()) - self.step0
                if trainer.termination.requested and (steps is None or done < steps):
                    # Keras still validates and calls us after a mid-epoch stop; a partial
                    # epoch must not be checkpointed as complete.
                    return
                logs = logs or {}
                state["epoch_seconds"].append(round(seconds, 3))
                for k, v in logs.items():
                    state["history"].setdefault(k, []).append(float(v))
                for split, writer in self.writers.items():
                    prefix = "val_" if split == "validation" else ""
                    with writer.as_default(step=epoch):
                        for name in ("loss", "accuracy"):
                            if prefix + name in logs:
                                tf.summary.scalar(f"epoch_{name}", logs[prefix + name])
                    writer.flush()
                if not interactive:
                    metrics = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                    trainer.log(f"epoch {epoch + 1}/{cfg.epochs} - {seconds:.1f}s - {metrics}")
                trainer._checkpoint(self.model, epoch + 1, state, workdir, tb_dir)
                if trainer.termination.requested:
                    self.model.stop_training = True  # arrived during validation

        if initial_epoch < cfg.epochs and not self.termination.requested:
            self.termination.model = model
            self.termination.install()
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                initial_epoch=initial_epoch,
                callbacks=[EpochEnd(), *profiles.callbacks(cfg)],  # profile hook
                steps_per_epoch=profiles.steps_per_epoch(cfg, len(dataset.y_train)),
                # A progress bar on a terminal; in a pod's log one line per epoch (EpochEnd):
                # Keras's verbose=2 still reads every step's metrics back from the device.
                verbose=1 if interactive else 0,
            )
        if self.termination.requested:
            done = _latest_checkpoint(self.store)
            raise PreemptedError(
                f"stopped by signal {self.termination.signum} after epoch "
                f"{done[0] if done else 0} of {cfg.epochs}; rerun with --run-id "
                f"{cfg.run_id} to resume"
            )
        test_loss, test_acc = model.evaluate(test_ds, verbose=0)
        state["final_accuracy_at"] = time.time()  # bench: process start to final accuracy
        return self._publish(
            model, dataset, state, replicas, float(test_loss), float(test_acc), workdir, tb_dir
        )

    def _checkpoint(self, model, epoch: int, state: dict, workdir: Path, tb_dir: Path) -> None:
        # Every worker saves (collectives may be involved); only the chief uploads.
        local = workdir / "checkpoints" / f"epoch-{epoch:04d}.keras"
        local.parent.mkdir(parents=True, exist_ok=True)
        model.save(local)
        if self.chief:
            # State before the checkpoint itself: a checkpoint whose state is missing
            # would not be resumable; a state without checkpoint is simply ignored.
            self._put(f"{CKPT_DIR}/state-{epoch:04d}.json", _json(state))
            self.store.upload_file(local, f"{CKPT_DIR}/epoch-{epoch:04d}.keras")
            self._upload_tree(tb_dir, "tensorboard")
        where = f"saved to {self.store.uri}/{CKPT_DIR}/" if self.chief else "done (chief uploads)"
        self.log(f"checkpoint: epoch {epoch} {where}")

    def _publish(
        self, model, dataset, state, replicas, test_loss, test_acc, workdir, tb_dir
    ) -> dict:
        cfg = self.cfg
        id_to_word = dataset.id_to_word(cfg.vocab_size)
        vectors = model.get_layer("embedding").get_weights()[0]
        neighbours = nearest(vectors, id_to_word, list(cfg.neighbours), cfg.k, cfg.metric)
        history = state["history"]
        metrics = {
            "model": cfg.model,
            "run_id": cfg.run_id,
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "epochs_completed": len(history.get("loss", [])),
            "history": {
                k: history.get(k, []) for k in ("loss", "accuracy", "val_loss", "val_accuracy")
            },
            "epoch_seconds": state["epoch_seconds"],
            "final_accuracy_at": state.get("final_accuracy_at"),  # unix time
            "replicas": replicas,
            "global_batch_size": cfg.batch_size,
            "train_examples": int(len(dataset.y_train)),
            "test_examples": int(len(dataset.y_test)),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        # Every worker saves: under MultiWorkerMirroredStrategy saving reads variables
        # through collectives, so a chief-only save blocks until its peers have exited.
        model.save(workdir / "model.keras")
        if self.chief:
            write_embedding(workdir, vectors, id_to_word)
            plot_curves(
                history,
                workdir / "curves.png",
                f"{cfg.model} run {cfg.run_id}: test accuracy {test_acc:.4f}",
            )
            self._put("word_index.json", json.dumps(dataset.word_index).encode())
            self._put("neighbours.json", _json(neighbours))
            self.store.upload_file(workdir / "model.keras", "model.keras")
            self.store.upload_file(workdir / "curves.png", "curves.png")
            self._upload_tree(workdir / "embedding", "embedding")
            self._upload_tree(tb_dir, "tensorboard")
            self._put("metrics.json", _json(metrics))
            # A previous attempt may have finished publishing first: same run, same content.
            with contextlib.suppress(AlreadyExistsError):
                self._put(SUCCESS, _json({"run_id": cfg.run_id}), if_absent=True)
        self.log(
            f"\n{cfg.model} run {cfg.run_id}: test accuracy {test_acc:.4f} "
            f"(loss {test_loss:.4f}) after {metrics['epochs_completed']} epochs "
            f"on {replicas} replica(s)"
        )
        # Machine-readable, printed by every worker: evaluate() all-reduces, so they agree.
        final = {k: metrics[k] for k in ("run_id", "test_accuracy", "test_loss", "replicas")}
        self.log("final: " + json.dumps({**final, "chief": self.chief}))
        great = neighbours["queries"].get("great")
        if great is not None:
            self.log("nearest to 'great': " + ", ".join(n["word"] for n in great))
        if neighbours["unknown"]:
            self.log(f"not in the vocabulary: {', '.join(neighbours['unknown'])}")
        self.log(f"artifacts: {self.store.uri}")
        if self.chief and cfg.promote:
            decision = promote(cfg, metrics, self.model_store)
            verdict = "promoted to" if decision["promoted"] else "NOT promoted to"
            self.log(f"{verdict} {self.model_store.uri}/{LATEST}: {decision['reason']}")
            metrics["promotion"] = decision
        return metrics


def train(cfg: TrainConfig, log=print) -> dict:
    """Run one training job to completion (or raise PreemptedError)."""
    return Trainer(cfg, log=log).run()
