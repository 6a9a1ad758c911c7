"""A small, reproducible aclImdb-layout corpus for the parity tests (standard library and
numpy only: the same bytes whatever the trainer's code, so digests pinned from the code
before the stream stay comparable).

Every feature the encoding must keep: Zipf-like word frequencies with many ties, words
beyond the vocabulary, reviews longer and shorter than the padded width, an empty review,
upper case, punctuation and `<br />`, digits and apostrophes, a NUL byte, undecodable
bytes, names whose string order is not their numeric order.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np

_WORDS = [f"w{i}" for i in range(400)] + ["don't", "it's", "10", "br", "The", "MOVIE", "film"]


def reviews(n_train: int = 240, n_test: int = 160, seed: int = 30) -> list[tuple]:
    """[(split, label, id, text bytes)] in generation order (not name order)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(_WORDS))]
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            label = "pos" if rng.random() < 0.5 else "neg"
            words = rng.choices(_WORDS, weights, k=rng.randint(0, 40))
            if rng.random() < 0.1:
                words.append(f"rare{rng.randint(0, 10**6)}")
            seps = [rng.choice([" ", " ", " ", ", ", ". ", "<br /><br />", "!  ", "\n"])
                    for _ in words]  # fmt: skip
            text = "".join(w + s for w, s in zip(words, seps, strict=True)).encode()
            if i % 37 == 5:
                text += b" caf\xe9 \xff\xfe movie"  # not UTF-8
            if i % 53 == 7:
                text = text.replace(b" ", b"\0", 1)
            if i == 3:
                text = b""
            out.append((split, label, i, text))
    return out


def _name(split: str, label: str, rid: int) -> str:
    return f"aclImdb/{split}/{label}/{rid}_{7 if label == 'pos' else 2}.txt"


def write_tarball(path: Path, corpus: list[tuple], order: str = "dataset") -> Path:
    """order: "dataset" (train then test, by name: what the stream reads in one pass) or
    "shuffled" (test members first, names out of order: the stream's second pass)."""
    members = [(_name(s, lab, rid), text) for s, lab, rid, text in corpus]
    if order == "dataset":
        members.sort(key=lambda m: (m[0].split("/")[1] != "train", m[0]))
    else:
        random.Random(7).shuffle(members)
    with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as tf:
        for name, text in members:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(text))
    return path


def write_tree(root: Path, corpus: list[tuple]) -> Path:
    for s, lab, rid, text in corpus:
        path = root / _name(s, lab, rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    return root / "aclImdb"


def write_keras_npz(path: Path, seed: int = 30) -> Path:
    """A Keras-layout imdb.npz (object arrays of 1-based rank lists), no word index."""
    rng = np.random.RandomState(seed)
    arrays = {}
    for split, n in (("train", 300), ("test", 200)):
        seqs = np.empty(n, dtype=object)
        seqs[:] = [rng.zipf(1.3, rng.randint(0, 60)).clip(1, 10**7).tolist() for _ in range(n)]
        arrays[f"x_{split}"] = seqs
        arrays[f"y_{split}"] = rng.randint(0, 2, n)
    np.savez(path, **arrays)
    return path


def digest(arrays: dict, word_index: dict) -> str:
    """One sha256 of the four arrays (dtype, shape, bytes) and the word index in rank order."""
    import hashlib
    import json

    h = hashlib.sha256()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    h.update(json.dumps(sorted(word_index.items(), key=lambda kv: kv[1])).encode())
    return h.hexdigest()
