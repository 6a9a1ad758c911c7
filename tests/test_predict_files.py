"""A run's files are checked when predict loads them (fast: a tiny real Keras model).

word_index.json and config.json come from a store anyone may have edited, copied or mixed:
each damage is one line naming the file and the problem (exit 2 on the command line),
never a traceback or another word's embedding; and the encoder takes index_from from the
run, not from today's default.
"""

from __future__ import annotations

import json

import pytest

from trainer import contract
from trainer.runs import RunError, load_run

WORDS = {"great": 1, "bad": 2, "film": 3}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from trainer.config import TrainConfig
    from trainer.models import build_model

    cfg = TrainConfig(model="mean", vocab_size=16, max_review_length=8, embedding_dim=4)
    path = tmp_path_factory.mktemp("model") / contract.MODEL_FILE
    build_model("mean", cfg).save(path)
    return path


def write_run(root, model_path, *, word_index=WORDS, vocab=16, length=8, index_from=3):
    run = root / "mean" / "r1"
    run.mkdir(parents=True)
    config = {"config": {"model": "mean", "vocab_size": vocab, "max_review_length": length},
              "encoding": {"index_from": index_from}}  # fmt: skip
    (run / contract.CONFIG).write_text(json.dumps(config))
    (run / contract.WORD_INDEX).write_text(json.dumps(word_index))
    (run / contract.MODEL_FILE).write_bytes(model_path.read_bytes())
    (run / contract.SUCCESS).write_text("{}")
    return run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"word_index": ["great", "bad"]}, "word_index.json is a JSON list",
                     id="word-index-list"),
        pytest.param({"word_index": {"great": "1"}}, "the rank of 'great' is '1'", id="text-rank"),
        pytest.param({"word_index": {"great": -4}}, "the rank of 'great' is -4", id="negative"),
        pytest.param({"word_index": {"great": 2**40}}, "the rank of 'great' is 1099511627776",
                     id="huge"),
        pytest.param({"word_index": {"great": 1.5}}, "the rank of 'great' is 1.5", id="float"),
        pytest.param({"vocab": 5000}, "vocab_size 5000 disagrees with the model's embedding of "
                     "16 rows", id="vocab-mismatch"),
        pytest.param({"length": 100}, "max_review_length 100 disagrees with the model's input "
                     "of 8 words", id="length-mismatch"),
        pytest.param({"vocab": "16"}, "vocab_size is '16': expected an integer", id="vocab-text"),
        pytest.param({"index_from": -1}, "index_from is -1", id="index-from-negative"),
    ],
)  # fmt: skip
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, tiny_model, change, message):
    run = write_run(tmp_path, tiny_model, **change)
    with pytest.raises(RunError) as e:
        load_run(str(run))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_encoder_uses_the_runs_index_from(tmp_path, tiny_model):
    """A run encoded with index_from 5 is predicted with 5: 'great' (rank 1) is id 6."""
    run = write_run(tmp_path, tiny_model, index_from=5)
    loaded = load_run(str(run))
    assert loaded.index_from == 5
    (row,) = loaded.encode(["great film"]).tolist()
    assert row[-3:] == [1, 1 + 5, 3 + 5]  # start mark, then rank + index_from


def test_a_damaged_word_index_on_the_command_line_exits_2(tmp_path, tiny_model, capsys):
    from trainer.predict.__main__ import main

    run = write_run(tmp_path, tiny_model, word_index={"great": "x"})
    assert main(["--run", str(run), "a great film"]) == contract.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "word_index.json" in err[0], err
