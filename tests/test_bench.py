"""The benchmark keeps working: a smoke run's result file has the documented structure."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, runner

ROOT = Path(__file__).resolve().parent.parent


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def smoke_result(shared_tarball, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    md = out / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nProse that must survive.\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench", "--smoke", "--data", str(shared_tarball)]
    cmd += ["--results-dir", str(out), "--update-md", "--md", str(md)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(out.glob("*-smoke.json"))
    assert len(files) == 1, f"expected one result file in {out}, got {files}"
    assert str(files[0]) in proc.stdout  # the path is printed
    return json.loads(files[0].read_text()), md


@pytest.mark.slow
def test_smoke_result_structure(smoke_result):
    result, _ = smoke_result
    for key in ("date", "machine", "versions", "settings", "data", "models", "targets_met"):
        assert key in result, f"missing {key}"
    assert result["settings"]["smoke"] is True
    assert result["settings"]["epochs"] == 1
    assert _positive(result["data"]["cold_seconds_median"])
    assert _positive(result["data"]["cache_seconds_median"])
    assert result["data"]["reviews"] == 50000
    assert set(result["models"]) == {"mean", "lstm"}
    for model, summary in result["models"].items():
        for impl in ("reference", "ours"):
            side = summary[impl]
            for key in (
                "first_epoch_seconds",
                "steady_epoch_seconds",
                "examples_per_second",
                "test_accuracy",
                "peak_rss_bytes",
                "wall_seconds",
                "cpu_seconds",
            ):
                assert _positive(side[key]), f"{model} {impl} {key} = {side[key]!r}"
            assert side["test_accuracy"] <= 1.0
            run = summary["runs"][0][impl]
            assert len(run["epoch_seconds"]) == 1
            assert run["train_examples"] == runner_sample(result)
        ratios = summary["ratios"]
        for key in ("steady_epoch_seconds", "first_epoch_seconds", "peak_rss_bytes"):
            assert _positive(ratios[key]), f"{model} ratio {key} = {ratios[key]!r}"
        assert isinstance(ratios["accuracy_points"], float)
        fast = summary["fast"]
        assert [s["seed"] for s in fast["seeds"]] == [runner.FAST_SEEDS[0]]
        for key in ("seconds_to_accuracy", "time_ratio", "cpu_ratio", "mean_accuracy"):
            assert _positive(fast[key]), f"{model} fast {key} = {fast[key]!r}"
        run = summary["runs"][0]["fast"]
        # The launch-to-accuracy span lies inside the process's wall time.
        assert 0 < run["seconds_to_accuracy"] < run["wall_seconds"]
        assert run["test_examples"] == runner_sample(result)
        assert run["train_examples"] < runner_sample(result)  # the validation share held out
        # Every phase of the process was marked, in order, and they add up to the span.
        phases = run["phase_seconds"]
        assert list(phases) == list(runner.PHASES), phases
        assert all(v >= 0 for v in phases.values()), phases
        assert sum(phases.values()) == pytest.approx(run["seconds_to_accuracy"], abs=0.01)
        assert fast["phase_seconds"] == phases  # one seed: the median is that seed's
    assert all(isinstance(v, bool) for v in result["targets_met"].values())
    for key in ("lstm_peak_rss", "mean_fast_accuracy", "lstm_fast_time"):
        assert key in result["targets_met"]
    assert result["lstm_kernel"] is None  # the kernel timing is for full runs only


def runner_sample(result: dict) -> int:
    return result["settings"]["sample"]


@pytest.mark.slow
def test_smoke_updates_only_the_generated_section(smoke_result):
    _, md = smoke_result
    text = md.read_text()
    assert "Prose that must survive." in text
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    section = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0]
    assert "| lstm | ours |" in section and "| mean | reference |" in section
    assert "Time to accuracy, `--profile fast`" in section and "| lstm | 113 |" in section
    assert "Where our time to accuracy goes" in section and "| TensorFlow import |" in section


def _pair(ref_epochs, ours_epochs, ref_acc=0.84, ours_acc=0.84, rss=2e9) -> dict:
    def side(epochs, acc):
        return {
            "epoch_seconds": epochs,
            "train_examples": 25000,
            "test_accuracy": acc,
            "peak_rss_bytes": rss,
            "wall_seconds": sum(epochs) + 10,
            "cpu_seconds": 2 * sum(epochs),
        }

    return {"reference": side(ref_epochs, ref_acc), "ours": side(ours_epochs, ours_acc)}


@pytest.mark.parametrize(
    ("name", "pairs", "ratio", "points"),
    [
        ("faster", [_pair([30, 20, 20], [20, 15, 15])], 0.75, 0.0),
        ("slower", [_pair([30, 20, 20], [40, 30, 30])], 1.5, 0.0),
        (
            "median of pairs",
            [
                _pair([9, 10, 10], [9, 5, 5]),
                _pair([9, 10, 10], [9, 8, 8]),
                _pair([9, 10, 10], [9, 30, 30]),
            ],
            0.8,
            0.0,
        ),  # fmt: skip
        ("accuracy", [_pair([3, 2, 2], [3, 2, 2], 0.84, 0.83)], 1.0, -1.0),
    ],
)
def test_summarise_ratios(name, pairs, ratio, points):
    s = runner.summarise(pairs)
    assert s["ratios"]["steady_epoch_seconds"] == pytest.approx(ratio), name
    assert s["ratios"]["accuracy_points"] == pytest.approx(points), name


@pytest.mark.parametrize(
    ("ratio", "points", "rss", "expected"),
    [
        (0.7, 0.1, 2e9, {"lstm_epoch_ratio": True, "lstm_accuracy": True, "lstm_peak_rss": True}),
        (0.9, 0.1, 2e9, {"lstm_epoch_ratio": False}),
        (0.7, -0.6, 2e9, {"lstm_accuracy": False}),
        (0.7, 0.0, 4e9, {"lstm_peak_rss": False}),
    ],
)
def test_check_targets(ratio, points, rss, expected):
    result = {
        "data": {"cold_seconds_median": 6.0, "cache_seconds_median": 0.1},
        "models": {
            "lstm": {"ratios": {"steady_epoch_seconds": ratio, "accuracy_points": points},
                     "ours": {"peak_rss_bytes": rss}},
        },
    }  # fmt: skip
    met = runner.check_targets(result)
    assert met["data_cold"] is False and met["data_cache"] is True
    for key, value in expected.items():
        assert met[key] is value, key


def _fast_pairs(accs, to_acc=10.0, fit=30.0) -> list[dict]:
    pairs = []
    for seed, acc in enumerate(accs):
        pair = _pair([10, 10, 10], [10, 10, 10])
        pair["reference"]["fit_seconds"] = fit
        pair["fast"] = {
            **pair["ours"],
            "seed": seed,
            "test_accuracy": acc,
            "seconds_to_accuracy": to_acc,
            "epochs_completed": 2,
        }
        pairs.append(pair)
    return pairs


@pytest.mark.parametrize(
    ("accs", "to_acc", "accuracy_met", "time_met"),
    [
        ([0.842, 0.845, 0.841], 15.0, True, True),
        ([0.842, 0.845, 0.841], 15.1, True, False),  # just over half the reference's 30 s
        ([0.839, 0.840, 0.840], 10.0, False, True),  # mean 83.97 %
        ([0.848, 0.848, 0.838], 10.0, False, True),  # mean 84.47 %, one seed 0.67 below
    ],
)
def test_fast_targets(accs, to_acc, accuracy_met, time_met):
    fast = runner.summarise_fast(_fast_pairs(accs, to_acc))
    assert fast["mean_accuracy"] == pytest.approx(sum(accs) / len(accs), abs=1e-5)
    assert fast["time_ratio"] == pytest.approx(to_acc / 30.0, abs=1e-3)
    result = {
        "data": {"cold_seconds_median": 1.0, "cache_seconds_median": 0.1},
        "models": {"lstm": {"ratios": {"steady_epoch_seconds": 1.0, "accuracy_points": 0.0},
                            "ours": {"peak_rss_bytes": 1e9}, "fast": fast}},
    }  # fmt: skip
    met = runner.check_targets(result)
    assert met["lstm_fast_accuracy"] is accuracy_met
    assert met["lstm_fast_time"] is time_met


def test_scale_corpora_are_n_copies_perturbed_the_same_way_every_time(tmp_path):
    import numpy as np

    from bench import corpora
    from tests.helpers import write_tarball
    from trainer import data

    src = write_tarball(tmp_path / "tiny.tar.gz")
    a = corpora.build(src, 3, tmp_path / "a.tar.gz")
    b = corpora.build(src, 3, tmp_path / "b.tar.gz")
    one = data.load(str(src), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c1")
    ds = data.load(str(a), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c3")
    again = data.load(str(b), vocab_size=10, max_review_length=6, cache_dir=tmp_path / "c3b")
    assert ds.stats["reviews"] == 3 * one.stats["reviews"]
    assert len(ds.y_train) == 3 * len(one.y_train) and len(ds.y_test) == 3 * len(one.y_test)
    assert ds.stats["tokens"] == 3 * one.stats["tokens"]  # words swapped, none lost
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    assert corpora.perturbed(b"a b c d", "x/1_2.txt", 1) != b"a b c d"
    assert sorted(corpora.perturbed(b"a b c d", "x/1_2.txt", 1).split()) == [b"a", b"b", b"c", b"d"]


def test_scale_encode_measures_cpu_per_review_and_updates_only_its_section(
    tmp_path, shared_tarball
):
    """`bench --scale-encode` on IMDB itself: the CPU seconds come from the process and its
    workers (wait4), the table's per-review column is CPU over reviews, and BENCHMARKS.md
    keeps every other line."""
    from bench import scale

    md = tmp_path / "B.md"
    md.write_text("head\n<!-- scale:begin -->\nkept\n<!-- scale:end -->\ntail\n")
    assert scale.main_encode("1", str(md), str(tmp_path / "r"), root=tmp_path / "bench") == 0
    (saved,) = (tmp_path / "r").glob("scale-encode-*.json")
    run = json.loads(saved.read_text())["runs"]["1"]
    assert run["exit"] == 0 and run["reviews"] == scale.REVIEWS_1X
    assert 0.5 < run["cpu_seconds"] < 10 * run["wall_seconds"]
    text = md.read_text()
    assert text.startswith("head\n<!-- scale:begin -->\nkept\n<!-- scale:end -->\ntail\n")
    row = next(line for line in text.splitlines() if line.startswith("| 1x |"))
    per_review = float(row.split("|")[5])
    assert per_review == pytest.approx(run["cpu_seconds"] / scale.REVIEWS_1X * 1e6, abs=1)
    with pytest.raises(SystemExit, match="expected positive integers"):
        scale.main_encode("1,x", md=str(md))
