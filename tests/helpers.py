"""Test helpers: tiny aclImdb corpora and keras-format npz files built on the fly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

# A tiny hand-written corpus: (split, label, id, text).
TINY = [
    ("train", "pos", 0, b"Great movie, great acting!"),
    ("train", "pos", 1, b"A great<br />great film."),
    ("train", "neg", 0, b"Bad movie. Bad, bad acting."),
    ("train", "neg", 1, b"Boring film; it's bad."),
    ("test", "pos", 0, b"Great fun"),
    ("test", "neg", 0, b"So boring and bad"),
]


def review_files(reviews=TINY):
    for split, label, rid, text in reviews:
        yield f"aclImdb/{split}/{label}/{rid}_{7 if label == 'pos' else 2}.txt", text


def write_tarball(path: Path, reviews=TINY, compress: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as tf:
        for name, text in review_files(reviews):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text))
    return path


def write_tree(root: Path, reviews=TINY) -> Path:
    for name, text in review_files(reviews):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    return root / "aclImdb"


def write_keras_npz(path: Path, splits: dict, word_index: dict | None = None) -> Path:
    """splits: {"x_train": [[rank, ...], ...], "y_train": [...], ...} (1-based ranks)."""
    arrays = {}
    for key, value in splits.items():
        if key.startswith("x_"):
            arr = np.empty(len(value), dtype=object)
            arr[:] = [list(v) for v in value]
            arrays[key] = arr
        else:
            arrays[key] = np.asarray(value)
    np.savez(path, **arrays)
    if word_index is not None:
        path.with_name("imdb_word_index.json").write_text(json.dumps(word_index))
    return path
