"""A finished run, found and loaded for inference: `resolve_run` (a directory or URI, or
`<model>/latest`), `load_run` (its model and encoding, every file checked first).

The library behind `trainer.predict`, `trainer.serving`'s command and `bench.parity`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer import contract, manifest, quiet
from trainer.contract import INDEX_FROM
from trainer.data.tokenizer import ENCODER_VERSION, ids_from_texts
from trainer.storage import NotFoundError, Store, StoreContentError, open_store


class RunError(StoreContentError):
    """The run cannot be used: missing, incomplete, or its files are damaged (named)."""


def _parent_uri(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    if uri.startswith("gs://") and "/" not in uri[len("gs://") :].rstrip("/"):
        return "", uri  # a bare bucket has no parent
    return (parent if parent or uri.startswith("/") else "."), name


def _through_latest(model_store: Store, shown: str) -> Store:
    from trainer.promotion import PointerError, read_latest

    model = model_store.uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        pointer = read_latest(model_store, model if model in contract.MODELS else None)
    except PointerError as e:
        raise RunError(str(e)) from None
    if pointer is None:
        raise RunError(
            f"no {contract.LATEST} in {model_store.uri} for run {shown!r}: no run of this "
            "model was promoted there; pass a run directory <output>/<model>/<run-id>"
        )
    return model_store.child(pointer["run_id"])


def resolve_run(run: str) -> Store:
    """The store of a complete run: a run directory or URI, or `<model>/latest`.

    Raises:
        RunError: no such run, or the run is incomplete (no `_SUCCESS`).
        StoreError: the URI is malformed or the store cannot be reached.
    """
    run = str(run or "").strip()
    if not run:
        raise RunError(
            "no --run given: expected a run directory or URI such as runs/mean/latest, "
            "runs/mean/<run-id> or gs://bucket/prefix/mean/<run-id>"
        )
    store = open_store(run)
    if store.exists(contract.SUCCESS):
        return store
    parent, name = _parent_uri(run)
    if name == contract.LATEST_ALIAS and parent and not store.exists(contract.CONFIG):
        store = _through_latest(open_store(parent), run)
    elif store.exists(contract.LATEST) and not store.exists(contract.CONFIG):
        store = _through_latest(store, run)  # a model directory: its promoted run
    if store.exists(contract.SUCCESS):
        return store
    # Bounded checks, not a listing: --run / must not walk the whole filesystem.
    started = (contract.CONFIG, contract.MODEL_FILE, contract.METRICS)
    if any(store.exists(key) for key in started) or store.list(contract.CHECKPOINT_DIR):
        raise RunError(
            f"run {store.uri} is incomplete: no {contract.SUCCESS} (still training, or it "
            "stopped; resume it with the same --run-id); pass a finished run"
        )
    raise RunError(
        f"no run at {run!r}: expected a finished run directory <output>/<model>/<run-id> "
        "(local path, file:// or gs://) or <output>/<model>/latest"
    )


@dataclass
class LoadedRun:
    """A finished run's model and encoding, ready to score raw reviews."""

    store: Store
    model: object
    word_index: dict[str, int]
    vocab_size: int
    max_review_length: int
    index_from: int = INDEX_FROM
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.store.uri

    def encode(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """The model input of `texts`, by the encoder the run's training data went through."""
        return ids_from_texts(
            texts, self.word_index, self.vocab_size, self.max_review_length, self.index_from
        )

    def scores(
        self,
        texts: Sequence[str | bytes],
        batch_size: int = 256,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """P(positive) of each review, float32, `batch_size` reviews per model call."""
        out = np.zeros(len(texts), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            batch = texts[lo : lo + batch_size]
            probs = self.model.predict_on_batch(self.encode(batch))
            out[lo : lo + len(batch)] = np.asarray(probs, dtype=np.float32).reshape(-1)
            if progress is not None:
                progress(len(batch))
        return out


def _read_json(store: Store, key: str, record: dict | None = None) -> dict:
    """The JSON of `key`, checked against the run's manifest (`record`) when it has one."""
    try:
        raw = store.read_bytes(key)
    except NotFoundError:
        raise RunError(
            f"run {store.uri} has no {key}: expected a run written by this trainer"
        ) from None
    manifest.check(store, record, key, raw)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise RunError(f"{store.uri}/{key} is not JSON: {e}") from None


def load_run(run: str) -> LoadedRun:
    """Resolve `run`, read its config and word index, and load its Keras model.

    Raises:
        RunError: no such run, incomplete run, or a run this code cannot encode for.
        StoreError: the store cannot be read.
    """
    store = resolve_run(run)
    record = manifest.read(store)
    doc = _read_json(store, contract.CONFIG, record)
    if not isinstance(doc, dict):
        raise RunError(f"{store.uri}/{contract.CONFIG} is a JSON {type(doc).__name__}: expected "
                       "an object; the run's files are damaged")  # fmt: skip
    cfg = doc.get("config", {})
    encoding = doc.get("encoding", {})
    version = encoding.get("version", ENCODER_VERSION)
    if version != ENCODER_VERSION:
        raise RunError(
            f"run {store.uri} was encoded by encoder version {version}: this trainer has "
            f"version {ENCODER_VERSION}; predict with the trainer version that made the run"
        )
    word_index = _read_json(store, contract.WORD_INDEX, record)
    if not isinstance(word_index, dict):
        raise RunError(
            f"{store.uri}/{contract.WORD_INDEX} is a JSON {type(word_index).__name__}: "
            "expected an object of word -> rank; the run's files are damaged"
        )
    if not word_index:
        raise RunError(
            f"run {store.uri} has an empty {contract.WORD_INDEX}: it was trained on ids "
            "without their words (an imdb.npz without imdb_word_index.json), so raw text "
            "cannot be encoded for it"
        )
    # Checked before the model is fetched: one line naming the file, never a traceback.
    ranks = word_ranks(store.uri, word_index)
    sizes = run_encoding(store.uri, cfg, encoding)
    name = cfg.get("model")  # absent in hand-made runs: the structure alone is checked
    if name is not None and name not in contract.MODELS:
        raise RunError(
            f"{store.uri}/{contract.CONFIG}: model is {name!r}: expected one of "
            f"{', '.join(contract.MODELS)}; the run's files are damaged"
        )
    manifest.check_record(
        store, record, model=name, vocab_size=sizes[0], max_review_length=sizes[1]
    )
    # A run of several workers trains with tf-keras, whose files Keras 3 does not load;
    # this must be decided before TensorFlow is imported.
    if doc.get("keras") == "tf-keras" and "tensorflow" not in sys.modules:
        os.environ[contract.LEGACY_KERAS_ENV] = "1"
    with tempfile.TemporaryDirectory(prefix="imdb-predict-") as tmp:
        local = Path(tmp) / contract.MODEL_FILE
        store.download_file(contract.MODEL_FILE, local)
        manifest.check(store, record, contract.MODEL_FILE, local)  # before it is loaded
        with quiet.quietly():
            import tensorflow as tf

            model = tf.keras.models.load_model(local, compile=False)
    try:
        metrics = json.loads(store.read_bytes(contract.METRICS))
    except (NotFoundError, ValueError):
        metrics = {}
    _check_model(store.uri, model, *sizes[:2], name)
    return LoadedRun(
        store=store,
        model=model,
        word_index=ranks,
        vocab_size=sizes[0],
        max_review_length=sizes[1],
        index_from=sizes[2],
        config=doc,
        metrics=metrics,
    )


_MAX_RANK = 2**31 - 1  # ranks become int32 ids


def word_ranks(uri: str, word_index: dict) -> dict[str, int]:
    """word_index.json's words and ranks, each rank a positive integer, or one line naming
    the file and the first bad entry (a rank that is text, negative or huge would be
    another word's id, or no id at all)."""
    out = {}
    for word, rank in word_index.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= _MAX_RANK:
            raise RunError(
                f"{uri}/{contract.WORD_INDEX}: the rank of {str(word)[:40]!r} is {rank!r}: "
                f"expected an integer from 1 to {_MAX_RANK}; the run's files are damaged"
            )
        out[str(word)] = rank
    return out


def run_encoding(uri: str, cfg: Any, encoding: Any) -> tuple[int, int, int]:
    """(vocab_size, max_review_length, index_from) from config.json, each checked."""
    from trainer.config import MAXIMA, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    if not isinstance(cfg, dict) or not isinstance(encoding, dict):
        raise RunError(
            f"{uri}/{contract.CONFIG}: 'config' and 'encoding' must be JSON objects; the "
            "run's files are damaged"
        )
    values = []
    for key, source, default, lo, hi in (
        ("vocab_size", cfg, defaults["vocab_size"], 1, MAXIMA["vocab_size"]),
        ("max_review_length", cfg, defaults["max_review_length"], 1, MAXIMA["max_review_length"]),
        ("index_from", encoding, INDEX_FROM, 0, 1000),
    ):
        value = source.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise RunError(
                f"{uri}/{contract.CONFIG}: {key} is {value!r}: expected an integer from {lo} "
                f"to {hi}; the run's files are damaged"
            )
        values.append(value)
    return values[0], values[1], values[2]


def model_kind(model: Any) -> str | None:
    """Which of contract.MODELS a loaded Keras model is, by its layers (trainer.models
    names them): an LSTM layer makes it 'lstm', the mean pooling 'mean'."""
    names = {getattr(layer, "name", "") for layer in getattr(model, "layers", [])}
    kinds = [kind for kind in contract.MODELS if kind in names]
    return kinds[0] if len(kinds) == 1 else None


def _check_model(
    uri: str, model: Any, vocab_size: int, max_review_length: int, name: str | None = None
) -> None:
    """The model takes what config.json says it was trained on, or one line saying not."""
    kind = model_kind(model)
    if name is not None and kind != name:
        raise RunError(
            f"{uri}/{contract.MODEL_FILE} is {'a ' + kind if kind else 'not a'} model, but "
            f"{contract.CONFIG} says {name!r}: the run's files are damaged or mixed"
        )
    try:
        rows = int(model.get_layer("embedding").input_dim)
    except (ValueError, AttributeError):
        rows = None
    width = (model.input_shape or (None, None))[-1] if hasattr(model, "input_shape") else None
    if rows is not None and rows != vocab_size:
        raise RunError(
            f"{uri}/{contract.CONFIG}: vocab_size {vocab_size} disagrees with the model's "
            f"embedding of {rows} rows; the run's files are damaged or mixed"
        )
    if width is not None and width != max_review_length:
        raise RunError(
            f"{uri}/{contract.CONFIG}: max_review_length {max_review_length} disagrees with "
            f"the model's input of {width} words; the run's files are damaged or mixed"
        )
