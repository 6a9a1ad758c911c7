"""The run's own record, written at publishing inside `_SUCCESS`: the model name, its
vocabulary size and review length, and the sha256 of each published file.

Whatever loads a finished run (predict, the serving export, jobs.results, the trainer
finding its run already complete) checks the files it reads against it, so a run whose
files disagree (an LSTM's `model.keras` copied into a mean run, a `word_index.json` of
another run) is one line naming the file, never a silent prediction. Runs published
before the manifest (a `_SUCCESS` without "files") are checked by their structure only.
Dependency-free (hashlib, json).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from trainer import contract
from trainer.storage import NotFoundError, Store, StoreContentError

VERSION = 1
# The files whose digests are recorded: everything a loader reads besides the serving tree.
RECORDED: tuple[str, ...] = tuple(f for f in contract.RUN_FILES if f != contract.SUCCESS)
# Of those, the ones publishing uploads from the run's scratch directory.
LOCAL = (contract.MODEL_FILE, contract.CURVES, contract.EMBEDDING_VECTORS,
         contract.EMBEDDING_METADATA)  # fmt: skip


def digest(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(data)
    return "sha256:" + h.hexdigest()


def build(run_id: str, model: str, vocab_size: int, length: int, files: dict) -> dict:
    """The `_SUCCESS` document: `files` maps each recorded key to its bytes or local path."""
    return {
        "run_id": run_id,
        "manifest": VERSION,
        "model": model,
        "vocab_size": vocab_size,
        "max_review_length": length,
        "files": {key: digest(files[key]) for key in sorted(files)},
    }


def read(store: Store) -> dict[str, Any] | None:
    """The run's manifest, or None for a run published without one (older runs).

    Raises:
        StoreContentError: `_SUCCESS` is not a manifest this project wrote.
    """
    try:
        raw = store.read_bytes(contract.SUCCESS)
    except NotFoundError:
        return None
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("files", {}), dict):
        raise StoreContentError(
            f"{store.uri}/{contract.SUCCESS} is not a run manifest (a JSON object with "
            "'files'); the run's files are damaged"
        )
    return doc if "files" in doc else None


def check(store: Store, manifest: dict[str, Any] | None, key: str, data: bytes | Path) -> None:
    """`data` (what was read for `key`) is what was published, or one line naming the file.

    Raises:
        StoreContentError: the digest differs from the one recorded for `key`.
    """
    if manifest is None or key not in manifest["files"]:
        return  # a file the run did not record (config.json of a run made by a library call)
    want = manifest["files"][key]
    got = digest(data)
    if want != got:
        raise StoreContentError(
            f"{store.uri}/{key} is not the file this run published ({got[:19]}..., the run's "
            f"manifest in {contract.SUCCESS} records {str(want)[:19]}...): the run's files "
            "are damaged or mixed from another run"
        )


def check_record(store: Store, manifest: dict[str, Any] | None, **values: Any) -> None:
    """The manifest's model, vocab_size and max_review_length are those of config.json."""
    if manifest is None:
        return
    for name, value in values.items():
        if name in manifest and manifest[name] != value:
            raise StoreContentError(
                f"{store.uri}/{contract.CONFIG}: {name} is {value!r}, the run's manifest in "
                f"{contract.SUCCESS} records {manifest[name]!r}: the run's files are damaged "
                "or mixed"
            )
