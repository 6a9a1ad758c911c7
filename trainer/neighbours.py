"""Nearest words in a learned embedding: pure, vectorised numpy."""

from __future__ import annotations

import numpy as np

METRICS = ("euclidean", "cosine")


def distances(queries: np.ndarray, vectors: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Pairwise distances, shape (len(queries), len(vectors))."""
    q = np.asarray(queries, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    if metric == "euclidean":
        sq = (q * q).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * q @ v.T
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ vn.T
    raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")


def nearest(
    vectors: np.ndarray,
    id_to_word: dict[int, str],
    queries: list[str],
    k: int = 10,
    metric: str = "euclidean",
) -> dict:
    """The k closest words to each query word.

    Args:
        vectors: the embedding matrix (vocab_size, dim); row i is word id i.
        id_to_word: the ids that are real words; any other id (padding, start, OOV,
            reserved) is never returned.
        queries: words to look up; those not in id_to_word are listed under "unknown".
        k: neighbours per query (the query word itself excluded).
        metric: "euclidean" or "cosine".

    Returns:
        {"metric", "k", "queries": {word: [{"word", "distance"}]}, "unknown": [...]}
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    word_to_id = {w: i for i, w in id_to_word.items() if i < len(vectors)}
    known = [w for w in queries if w in word_to_id]
    result = {
        "metric": metric,
        "k": int(k),
        "queries": {},
        "unknown": [w for w in queries if w not in word_to_id],
    }
    if not known:
        return result
    valid = np.zeros(len(vectors), dtype=bool)
    valid[list(word_to_id.values())] = True
    q_ids = np.array([word_to_id[w] for w in known])
    d = distances(vectors[q_ids], vectors, metric)
    d[:, ~valid] = np.inf
    d[np.arange(len(q_ids)), q_ids] = np.inf  # a word is not its own neighbour
    kk = min(k, int(valid.sum()) - 1)
    if kk <= 0:
        return result | {"queries": {w: [] for w in known}}
    top = np.argpartition(d, kk - 1, axis=1)[:, :kk]
    for row, word in enumerate(known):
        ids = top[row][np.argsort(d[row, top[row]], kind="stable")]
        result["queries"][word] = [
            {"word": id_to_word[int(i)], "distance": round(float(d[row, i]), 6)} for i in ids
        ]
    return result
