"""The serving SavedModel every run writes: loads without this project's code, tokenises in
the graph exactly like the Python encoder, and scores like `trainer.predict`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from trainer import contract, data, serving

# `sample_run`: one small trained run, shared by the prediction and serving tests.
pytest_plugins = ["tests.trained"]

pytestmark = pytest.mark.slow

# Run in a bare interpreter (-I: no cwd, no PYTHONPATH, no user site) in an empty
# directory, with an import hook that fails on any module of this project: what a model
# server has.
CLEAN_LOADER = """
import json, sys
import numpy as np

class NoProjectCode:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("trainer", "jobs", "bench", "tests"):
            raise ImportError("project module imported: " + name)

sys.meta_path.insert(0, NoProjectCode())
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
texts = [bytes.fromhex(h) for h in json.load(open(sys.argv[2]))]
batch = tf.constant(texts, tf.string)
serve = model.signatures["serving_default"]
ids = model.signatures["tokenize"](reviews=batch)["ids"].numpy()
scores = serve(reviews=batch)["probability"].numpy()
inputs = serve.structured_input_signature[1]
np.savez(sys.argv[3], ids=ids, scores=scores)
print(json.dumps({
    "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in inputs.items()},
    "outputs": sorted(serve.structured_outputs),
    "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("trainer", "jobs")),
}))
"""

TRICKY = [
    "a great film",
    "A GREAT FILM!!! 10/10",
    "Don't<br />stop<br /><br />it's 'quoted' isn't",
    "<br />",
    "",
    "   ",
    "caf\u00e9 na\u00efve \u00c9COLE \u212a \u0130stanbul",
    "emoji \U0001f600great\U0001f600film",
    "tab\tnew\nline\r\nreturn",
    "under_score hyphen-ated dot.ted",
    "great " * 150 + "the end",
    "x" * 500,
    "#",
]
TRICKY_BYTES = [
    b"awful\xff\xfe film",
    b"trunc\xc3",
    b"\xc3Abc",
    b"nul\x00inside",
    b"\xed\xa0\x80ok",
]


def clean_load(serving_dir, texts: list[bytes], tmp_path) -> tuple[dict, np.ndarray, np.ndarray]:
    script = tmp_path / "load.py"
    script.write_text(CLEAN_LOADER)
    inputs = tmp_path / "texts.json"
    inputs.write_text(json.dumps([t.hex() for t in texts]))
    out = tmp_path / "out.npz"
    empty = tmp_path / "cwd"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(serving_dir), str(inputs), str(out)],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return json.loads(proc.stdout.splitlines()[-1]), f["ids"], f["scores"]


@pytest.fixture(scope="module")
def served(sample_run, shared_tarball, tmp_path_factory):
    """The run's SavedModel evaluated, without project code, on raw test reviews + tricky
    strings; and the same texts through trainer.predict's encoder and model."""
    from trainer import runs

    raw, _ = data.raw_split(str(shared_tarball), "test", cache_dir=sample_run.cache)
    texts = raw[:3000] + [t.encode() for t in TRICKY] + TRICKY_BYTES
    tmp = tmp_path_factory.mktemp("served")
    info, ids, scores = clean_load(
        sample_run.run_dir / contract.SERVING_DIR / contract.SERVING_VERSION, texts, tmp
    )
    loaded = runs.load_run(str(sample_run.run_dir))
    return {
        "info": info,
        "ids": ids,
        "scores": scores,
        "texts": texts,
        "py_ids": loaded.encode(texts),
        "py_scores": loaded.scores(texts, batch_size=500),
    }


def test_every_run_writes_a_versioned_savedmodel(sample_run):
    version = sample_run.run_dir / contract.SERVING_DIR / contract.SERVING_VERSION
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()


def test_signature_takes_strings_and_loads_without_project_code(served):
    info = served["info"]
    assert info["inputs"] == {serving.INPUT_KEY: ["string", [None]]}
    assert info["outputs"] == [serving.OUTPUT_KEY]
    assert info["project_modules"] == []


def test_in_graph_tokeniser_gives_the_python_encoder_ids(served):
    mismatched = [
        served["texts"][i][:60]
        for i in np.flatnonzero((served["ids"] != served["py_ids"]).any(axis=1))
    ]
    assert mismatched == []
    assert served["ids"].shape == (len(served["texts"]), 100)


def test_savedmodel_scores_equal_predict_scores(served):
    diff = np.abs(served["scores"] - served["py_scores"])
    assert served["scores"].shape == (len(served["texts"]),)
    assert float(diff.max()) < 1e-5


def test_tokeniser_of_a_tiny_vocabulary(tmp_path):
    """Front padding, truncation, OOV and the start id, on a model whose output is its
    last input id: the SavedModel's own tokeniser, read back through its scores."""
    import tensorflow as tf

    index = {"great": 1, "film": 2, "don't": 3, "br": 4, "a": 6}

    class Cfg:
        vocab_size, max_review_length = 9, 6

    # id -> the id as a float, then a dense layer that keeps only the last position.
    keras = tf.keras
    words = keras.Input(shape=(6,), dtype="int32")
    x = keras.layers.Embedding(9, 1, name="embedding")(words)
    x = keras.layers.Flatten()(x)
    last = keras.layers.Dense(1, name="output")(x)
    model = keras.Model(words, last)
    model.get_layer("embedding").set_weights([np.arange(9, dtype="float32")[:, None]])
    model.get_layer("output").set_weights([np.eye(6, dtype="float32")[:, -1:], np.zeros(1)])
    out = serving.export(model, index, Cfg, tmp_path / "serving")
    loaded = tf.saved_model.load(str(out))
    texts = [
        b"great film",
        b"Don't<br />stop",
        b"a",
        b"",
        b"great " * 9 + b"film",
        b"GREAT\xfffilm",
        b"\xc3Film",
    ]
    ids = loaded.signatures["tokenize"](reviews=tf.constant(texts))["ids"].numpy()
    np.testing.assert_array_equal(ids, data.ids_from_texts(texts, index, 9, 6))
    assert ids.tolist()[:2] == [[0, 0, 0, 1, 4, 5], [0, 0, 1, 6, 7, 2]]
    scores = loaded.signatures["serving_default"](reviews=tf.constant(texts))["probability"]
    assert scores.numpy().tolist() == [5.0, 2.0, 2.0, 1.0, 5.0, 5.0, 5.0]


def test_serving_cli_exports_an_existing_run(sample_run, tmp_path):
    import shutil

    from tests.trained import run_module

    old = tmp_path / "mean" / "old"
    shutil.copytree(sample_run.run_dir, old)
    shutil.rmtree(old / contract.SERVING_DIR)
    proc = run_module("trainer.serving", ["--run", str(old)])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert (old / contract.SERVING_DIR / contract.SERVING_VERSION / "saved_model.pb").is_file()
    bad = run_module("trainer.serving", ["--run", str(tmp_path / "nowhere")])
    assert bad.returncode == 2 and bad.stderr.decode().startswith("error: no run at")


def test_parity_benchmark_reports_zero_mismatches(sample_run):
    from tests.trained import run_module

    proc = run_module(
        "bench.parity", ["--run", str(sample_run.run_dir), "--cache-dir", str(sample_run.cache)]
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    line = [x for x in proc.stdout.decode().splitlines() if x.startswith("parity: ")][-1]
    figures = json.loads(line[len("parity: ") :])
    assert figures["reviews"] == len(sample_run.texts)
    assert figures["tokeniser_mismatched_rows"] == 0
    assert figures["encoder_vs_training_arrays_mismatched_rows"] == 0
    assert figures["accuracy_reproduced"] and figures["max_score_difference"] < 1e-5
