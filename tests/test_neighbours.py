"""Nearest neighbours on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.neighbours import distances, nearest

#   id: 0 pad, 1 start, 2 oov, 3 unused, then words.
VECTORS = np.array(
    [
        [0.0, 0.0],  # 0 <pad>: closest to everything, must never be returned
        [1.0, 0.1],  # 1 <start>
        [1.0, 0.0],  # 2 <oov>
        [0.9, 0.0],  # 3 reserved
        [1.0, 0.0],  # 4 great
        [2.0, 0.0],  # 5 excellent  (same direction as great, distance 1)
        [1.0, 0.5],  # 6 good       (distance 0.5)
        [-1.0, 0.0],  # 7 bad       (distance 2, opposite direction)
        [0.0, 3.0],  # 8 boring
    ]
)
ID_TO_WORD = {4: "great", 5: "excellent", 6: "good", 7: "bad", 8: "boring"}


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        pytest.param("euclidean", ["good", "excellent", "bad"], id="euclidean"),
        pytest.param("cosine", ["excellent", "good", "boring"], id="cosine"),
    ],
)
def test_nearest_orders_by_metric_and_skips_reserved_ids(metric, expected):
    out = nearest(VECTORS, ID_TO_WORD, ["great"], k=3, metric=metric)
    got = out["queries"]["great"]
    assert [n["word"] for n in got] == expected
    dists = [n["distance"] for n in got]
    assert dists == sorted(dists)
    assert out["metric"] == metric and out["k"] == 3


def test_euclidean_distances_are_exact():
    out = nearest(VECTORS, ID_TO_WORD, ["great"], k=4)
    assert [round(n["distance"], 6) for n in out["queries"]["great"]] == [
        0.5,
        1.0,
        2.0,
        round(float(np.hypot(1.0, 3.0)), 6),
    ]


def test_unknown_words_are_reported_not_fatal():
    out = nearest(VECTORS, ID_TO_WORD, ["great", "zzz", "<pad>"], k=2)
    assert out["unknown"] == ["zzz", "<pad>"]
    assert list(out["queries"]) == ["great"]


def test_k_larger_than_vocabulary_returns_every_other_word():
    out = nearest(VECTORS, ID_TO_WORD, ["bad"], k=50)
    assert sorted(n["word"] for n in out["queries"]["bad"]) == [
        "boring",
        "excellent",
        "good",
        "great",
    ]


def test_distances_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(7, 5))
    brute = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    np.testing.assert_allclose(distances(a, b), brute, atol=1e-9)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        distances(a, b, "manhattan")
