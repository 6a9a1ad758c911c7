"""A finished run's artifacts: metrics, neighbours, model, embedding, curves, then `_SUCCESS`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer import contract, manifest, serving
from trainer.config import TrainConfig
from trainer.cost import restarts, run_cost
from trainer.neighbours import nearest
from trainer.promotion import to_json
from trainer.state import RunState
from trainer.storage import AlreadyExistsError, NotFoundError, Store, upload_tree

RESERVED = {0: "<pad>", 1: "<start>", 2: "<oov>", 3: "<unused>"}


@dataclass
class FinishedRun:
    """Everything publishing needs about a run whose training and test pass are done."""

    cfg: TrainConfig
    model: Any  # the trained keras.Model
    dataset: Any  # trainer.data.Dataset
    state: RunState
    replicas: int
    test_loss: float
    test_accuracy: float
    workdir: Path  # local scratch directory of this run
    chief: bool  # only the chief writes to the store
    final_accuracy_at: float | None = None  # unix time of the final test pass (bench)
    phases: dict[str, float] | None = None  # trainer.phases.marks of this process

    def metrics(self) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model,
            "run_id": cfg.run_id,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "epochs_completed": self.state.epochs_completed,
            "history": self.state.curves(),
            "epoch_seconds": self.state.epoch_seconds,
            "final_accuracy_at": self.final_accuracy_at,
            "phases": self.phases,
            "cost": run_cost(self.phases or {}),
            "replicas": self.replicas,
            "global_batch_size": cfg.batch_size,
            "train_examples": int(len(self.dataset.y_train)),
            "test_examples": int(len(self.dataset.y_test)),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def write_embedding(workdir: Path, vectors: np.ndarray, id_to_word: dict[int, str]) -> None:
    """TensorBoard projector files: one vector and one label per word id."""
    emb = workdir / Path(contract.EMBEDDING_VECTORS).parent
    emb.mkdir(parents=True, exist_ok=True)
    np.savetxt(workdir / contract.EMBEDDING_VECTORS, vectors, delimiter="\t", fmt="%.6f")
    labels = [id_to_word.get(i, RESERVED.get(i, f"<id {i}>")) for i in range(len(vectors))]
    (workdir / contract.EMBEDDING_METADATA).write_text("\n".join(labels) + "\n", encoding="utf-8")


def plot_curves(history: dict, path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
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


def publish(run: FinishedRun, store: Store) -> tuple[dict, dict]:
    """Write the run's artifacts, `_SUCCESS` last; returns (metrics, neighbours)."""
    cfg, workdir = run.cfg, run.workdir
    id_to_word = run.dataset.id_to_word(cfg.vocab_size)
    vectors = run.model.get_layer("embedding").get_weights()[0]
    neighbours = nearest(vectors, id_to_word, list(cfg.neighbours), cfg.k, cfg.metric)
    metrics = run.metrics()
    metrics["cost"].update(restarts(store, run.state.epoch_seconds))
    # Every worker saves: under MultiWorkerMirroredStrategy saving reads variables through
    # collectives, so a chief-only save blocks until its peers have exited.
    run.model.save(workdir / contract.MODEL_FILE)
    if run.chief:
        write_embedding(workdir, vectors, id_to_word)
        title = f"{cfg.model} run {cfg.run_id}: test accuracy {run.test_accuracy:.4f}"
        plot_curves(run.state.history, workdir / contract.CURVES, title)
        word_index = json.dumps(run.dataset.word_index).encode()
        store.write_bytes(contract.WORD_INDEX, word_index)
        store.write_bytes(contract.NEIGHBOURS, to_json(neighbours))
        for name in (contract.MODEL_FILE, contract.CURVES):
            store.upload_file(workdir / name, name)
        # serving/: a SavedModel taking raw review strings (trainer/serving.py). It needs the
        # words: an imdb.npz without its word index gives ids only.
        if run.dataset.word_index:
            serving.export(run.model, run.dataset.word_index, cfg, workdir / contract.SERVING_DIR)
            upload_tree(store, workdir / contract.SERVING_DIR, contract.SERVING_DIR)
        for name in (contract.EMBEDDING_VECTORS, contract.EMBEDDING_METADATA):
            store.upload_file(workdir / name, name)
        upload_tree(store, workdir / contract.TENSORBOARD_DIR, contract.TENSORBOARD_DIR)
        store.write_bytes(contract.METRICS, to_json(metrics))
        # The run's record, each file's digest as written (config.json as the store has it:
        # written at the start, perhaps by an earlier attempt).
        files = {
            contract.METRICS: to_json(metrics),
            contract.NEIGHBOURS: to_json(neighbours),
            contract.WORD_INDEX: word_index,
            **{name: workdir / name for name in manifest.LOCAL},
        }
        with contextlib.suppress(NotFoundError):  # a run published by a library caller
            files[contract.CONFIG] = store.read_bytes(contract.CONFIG)
        record = manifest.build(cfg.run_id, cfg.model, cfg.vocab_size, cfg.max_review_length, files)
        # A previous attempt may have finished publishing first: same run, same content.
        with contextlib.suppress(AlreadyExistsError):
            store.write_bytes(contract.SUCCESS, to_json(record), if_absent=True)
    return metrics, neighbours
