"""`python -m trainer.predict` and the one raw-text encoder it shares with the trainer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, trainer_env
from trainer import data

# `sample_run`: one small trained run, shared by the prediction and serving tests.
pytest_plugins = ["tests.trained"]

# A hand-made index: id = rank + 3, vocab_size 9 keeps ranks 1-5 (ids 4-8).
INDEX = {"great": 1, "film": 2, "don't": 3, "br": 4, "10": 5, "a": 6}
VOCAB, MAXLEN = 9, 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("great film", [0, 0, 0, 1, 4, 5], id="plain"),
        pytest.param("GREAT Film!!!", [0, 0, 0, 1, 4, 5], id="uppercase-punctuation"),
        pytest.param("Don't<br />stop", [0, 0, 1, 6, 7, 2], id="apostrophe-br-oov"),
        pytest.param("a film", [0, 0, 0, 1, 2, 5], id="rank-beyond-vocab-is-oov"),
        pytest.param("10/10", [0, 0, 0, 1, 8, 8], id="digits"),
        pytest.param("", [0, 0, 0, 0, 0, 1], id="empty"),
        pytest.param("  \t\n ", [0, 0, 0, 0, 0, 1], id="blank"),
        pytest.param(
            "great great great great great film", [4, 4, 4, 4, 4, 5], id="truncated-at-the-front"
        ),
        pytest.param("caf\u00e9 great", [0, 0, 0, 1, 2, 4], id="non-ascii-letter-splits"),
        # bytes.lower() is ASCII-only: the Kelvin sign is no "k", as in the training data.
        pytest.param("\u212a great", [0, 0, 0, 0, 1, 4], id="unicode-that-lowercases-to-ascii"),
        pytest.param(b"great\xfffilm", [0, 0, 0, 1, 4, 5], id="undecodable-byte"),
        pytest.param(b"great\x00film", [0, 0, 0, 1, 4, 5], id="nul-is-no-review-boundary"),
        pytest.param("#great#", [0, 0, 0, 0, 1, 4], id="marker-character"),
    ],
)
def test_ids_from_texts_cases(text, expected):
    assert data.ids_from_texts([text], INDEX, VOCAB, MAXLEN).tolist() == [expected]


def test_ids_from_texts_batch_and_empty_batch():
    out = data.ids_from_texts(["great", "", "film"], INDEX, VOCAB, MAXLEN)
    assert out.dtype == np.int32 and out.shape == (3, MAXLEN)
    assert out[:, -1].tolist() == [4, 1, 5]
    assert data.ids_from_texts([], INDEX, VOCAB, MAXLEN).shape == (0, MAXLEN)


@pytest.fixture(scope="module")
def full_data(shared_tarball, warm_cache):
    return data.load(str(shared_tarball), cache_dir=warm_cache), warm_cache


@pytest.mark.parametrize("split", ["train", "test"])
def test_ids_from_texts_reproduces_the_training_arrays(full_data, shared_tarball, split):
    """The encoder prediction uses gives, from the raw reviews and the word index alone,
    exactly the arrays the trainer trained and tested on (a sample of each split here;
    all of the test split in `python -m bench.parity`)."""
    ds, cache = full_data
    texts, labels = data.raw_split(str(shared_tarball), split, cache_dir=cache)
    n = 4000
    x = data.ids_from_texts(texts[:n], ds.word_index, 5000, 100)
    expected = getattr(ds, f"x_{split}")[:n]
    assert int((x != expected).any(axis=1).sum()) == 0
    np.testing.assert_array_equal(labels[:n], getattr(ds, f"y_{split}")[:n])


def test_raw_split_refuses_an_npz(tmp_path):
    from tests.helpers import write_keras_npz

    npz = write_keras_npz(
        tmp_path / "imdb.npz", {"x_train": [[1]], "y_train": [1], "x_test": [[1]], "y_test": [0]}
    )
    with pytest.raises(data.DataError, match="npz of word ids"):
        data.raw_split(str(npz), "test", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- the CLI


def predict(args: list[str], input: bytes = b""):
    return subprocess.run(
        [sys.executable, "-m", "trainer.predict", *args],
        cwd=ROOT,
        env=trainer_env(),
        input=input,
        capture_output=True,
        timeout=300,
    )


def rows(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


@pytest.mark.slow
def test_predict_reproduces_the_recorded_test_accuracy(sample_run, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes(b"\n".join(sample_run.texts) + b"\n")
    proc = predict(
        ["--run", str(sample_run.run_dir), "--file", str(reviews), "--batch-size", "100"]
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = rows(proc)
    assert len(out) == len(sample_run.texts)
    predicted = np.array([r["label"] == "positive" for r in out])
    correct = int((predicted == (sample_run.labels == 1)).sum())
    recorded = sample_run.metrics["test_accuracy"]
    assert correct == round(recorded * len(sample_run.texts)), (correct, recorded)
    assert all(0.0 <= r["score"] <= 1.0 for r in out)
    assert all(len(r["text"]) <= 80 for r in out)
    # Nothing but our own lines: no TensorFlow start-up noise on stderr.
    assert proc.stderr.decode().strip() == ""


@pytest.mark.slow
def test_predict_arguments_latest_and_stdin(sample_run):
    latest = sample_run.store / "mean" / "latest"
    proc = predict(["--run", str(latest), "a great film", "(great)", "--", "-1 stars, awful"])
    assert proc.returncode == 0, proc.stderr.decode()
    out = rows(proc)
    # Reviews go through as written: fire would have read "(great)" as the word great.
    assert [r["text"] for r in out] == ["a great film", "(great)", "-1 stars, awful"]
    assert {r["label"] for r in out} <= {"positive", "negative"}
    piped = predict(["--run", f"file://{latest}"], input=b"a great film\n\n(great)\n")
    assert piped.returncode == 0, piped.stderr.decode()
    assert [r["score"] for r in rows(piped)] == [out[0]["score"], out[1]["score"]]


@pytest.mark.slow
def test_predict_from_a_gcs_store(sample_run, gcs_bucket):
    from trainer.storage import open_store

    store = open_store(f"gs://{gcs_bucket}/imdb")
    for path in sorted(p for p in sample_run.run_dir.rglob("*") if p.is_file()):
        store.upload_file(path, f"mean/sample/{path.relative_to(sample_run.run_dir).as_posix()}")
    store.write_bytes("mean/latest.json", (sample_run.store / "mean" / "latest.json").read_bytes())
    local = predict(["--run", str(sample_run.run_dir), "a great film"])
    remote = predict(["--run", f"gs://{gcs_bucket}/imdb/mean/latest", "a great film"])
    assert remote.returncode == 0, remote.stderr.decode()
    assert rows(remote) == rows(local)


BAD = [
    pytest.param(["--run", "{tmp}/nowhere", "x"], b"", "no run at", id="unknown-run"),
    pytest.param(
        ["--run", "{incomplete}", "x"], b"", "incomplete: no _SUCCESS", id="run-without-success"
    ),
    pytest.param(
        ["--run", "{tmp}/mean/latest", "x"], b"", "no latest.json in", id="no-latest-json"
    ),
    pytest.param(["--run", "{run}", "--file", "{empty}"], b"", "has no reviews", id="empty-file"),
    pytest.param(
        ["--run", "{run}", "--file", "-"], b"\n  \n", "stdin has no reviews", id="blank-stdin"
    ),
    pytest.param(
        ["--run", "{run}", "--file", "{badbytes}"],
        b"",
        "line 2 is not UTF-8 (byte 0xff at column 6)",
        id="non-utf8-file",
    ),
    pytest.param(
        ["--run", "{run}", "--file", "{tmp}/missing.txt"],
        b"",
        "cannot read --file",
        id="missing-file",
    ),
    pytest.param(
        ["--run", "{run}", "--batch-size", "0", "x"],
        b"",
        "invalid --batch-size 0",
        id="bad-batch-size",
    ),
    pytest.param(
        ["--run", "{run}", "--bad-bytes", "drop", "x"],
        b"",
        "invalid --bad-bytes",
        id="bad-bad-bytes",
    ),
    pytest.param(["--run", "{run}", "--nope", "1", "x"], b"", "unknown flag --nope", id="bad-flag"),
    pytest.param(["--run", "gs://NO/x", "x"], b"", "invalid bucket name 'NO'", id="bad-bucket"),
    pytest.param(["x"], b"", "no --run given", id="no-run"),
    pytest.param(
        ["--run", "{run}", "a fine film", ""],
        b"",
        "review argument 2 is empty",
        id="empty-review-argument",
    ),  # fmt: skip
    pytest.param(["--run", "{run}", "   "], b"", "review argument 1 is empty", id="blank-review"),
    pytest.param(
        ["--run", "{run}", "--file", "{empty}", "x"], b"", "both as arguments", id="args-and-file"
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "stdin", "message"), BAD)
def test_bad_input_is_one_line_and_exit_2(
    sample_run,
    tmp_path,
    args,
    stdin,
    message,
):
    incomplete = tmp_path / "mean" / "half"
    shutil.copytree(sample_run.run_dir, incomplete)
    (incomplete / "_SUCCESS").unlink()
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bad.txt").write_bytes(b"a great film\nawful\xff film\n")
    subs = {
        "{tmp}": str(tmp_path),
        "{incomplete}": str(incomplete),
        "{run}": str(sample_run.run_dir),
        "{empty}": str(tmp_path / "empty.txt"),
        "{badbytes}": str(tmp_path / "bad.txt"),
    }
    for key, value in subs.items():
        args = [a.replace(key, value) for a in args]
    proc = predict(args, input=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert proc.stdout == b""  # nothing printed before the error


@pytest.mark.slow
def test_bad_bytes_replace_is_documented_and_changes_no_word(sample_run, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"awful\xff film\n")
    good = tmp_path / "good.txt"
    good.write_bytes(b"awful film\n")
    replaced = predict(
        ["--run", str(sample_run.run_dir), "--file", str(bad), "--bad-bytes", "replace"]
    )
    assert replaced.returncode == 0, replaced.stderr.decode()
    clean = predict(["--run", str(sample_run.run_dir), "--file", str(good)])
    assert rows(replaced)[0]["text"] == "awful\ufffd film"
    assert rows(replaced)[0]["score"] == rows(clean)[0]["score"]
