"""jobs.results treats the store as untrusted: hostile or broken pointers and metrics give
one line naming the file, and nothing is ever written outside --dest."""

from __future__ import annotations

import json

import pytest

from jobs import results
from tests.helpers import snapshot
from tests.test_jobs_results import write_run
from trainer.contract import CHECKPOINT_DIR, LATEST, METRICS, SUCCESS
from trainer.storage import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(f"gs://{request.getfixturevalue('gcs_bucket')}/imdb")


def cli(capsys, *argv):
    code = results.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


POINTERS = {
    "escaping-run-id": (b'{"run_id": "../../x"}', "is not a run pointer: run_id '../../x'"),
    "numeric-run-id": (b'{"run_id": 5}', "is not a run pointer: run_id 5"),
    "no-run-id": (b'{"id": "r1"}', "is not a run pointer: run_id None"),
    "no-accuracy": (b'{"run_id": "r1"}', "is not a run pointer: test_accuracy None"),
    "foreign-json": (
        b'["lstm", "r1"]',
        "is not a run pointer: expected a JSON object with run_id and test_accuracy, "
        "found a JSON list",
    ),
    "malformed": (b'{"run_id": "r1"', "is not valid JSON"),
    "not-utf8": (b"\xff\xfe{}", "is not valid JSON"),
    "other-models-pointer": (
        b'{"run_id": "r1", "model": "mean", "test_accuracy": 0.9}',
        "is not a run pointer: it names a run of model 'mean', not 'lstm'",
    ),
    "nested-too-deep": (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply to be a pointer"),
}


@pytest.mark.parametrize("pointer", POINTERS)
@pytest.mark.parametrize("command", ["show", "pull"])
def test_bad_latest_pointer_is_one_line_naming_the_file(store, tmp_path, capsys, pointer, command):
    # What a hostile pointer aims at: object names are literal in GCS, so these exist.
    for key in (METRICS, f"{CHECKPOINT_DIR}/epoch-0001.keras", SUCCESS):
        store.write_bytes(f"lstm/../../x/{key}" if "gs://" in store.uri else f"x/{key}", b"{}")
    raw, message = POINTERS[pointer]
    store.write_bytes(f"lstm/{LATEST}", raw)
    work = tmp_path / "work"
    dest = work / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    argv = [command, "--output", store.uri, "--model", "lstm"]
    code, out, err = cli(capsys, *argv, *(["--dest", str(dest)] if command == "pull" else []))
    assert code == 2
    assert err.startswith(f"error: {store.uri}/lstm/{LATEST} {message}"), err
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(work) == {}  # nothing written, inside or outside dest


@pytest.mark.parametrize("pointer", ["escaping-run-id", "malformed"])
def test_list_names_a_bad_pointer_and_lists_the_runs(store, capsys, pointer):
    write_run(store, "lstm", "r1", 0.86)
    store.write_bytes(f"lstm/{LATEST}", POINTERS[pointer][0])
    code, out, err = cli(capsys, "list", "--output", store.uri, "--model", "lstm")
    assert code == 0
    assert err.startswith(f"warning: {store.uri}/lstm/{LATEST} {POINTERS[pointer][1]}"), err
    assert ["lstm", "r1", "complete", "0.8600", "2"] in [line.split() for line in out.splitlines()]


def test_run_id_argument_is_validated(tmp_path, capsys):
    store = open_store(str(tmp_path / "store"))
    write_run(store, "lstm", "r1", 0.86)
    code, _, err = cli(capsys, "pull", "--output", store.uri, "--model", "lstm",
                       "--run-id", "../../x", "--dest", str(tmp_path / "d"))  # fmt: skip
    assert code == 2 and err.startswith("error: invalid run id '../../x': expected 1-63"), err


def test_truncated_metrics_marks_one_run_corrupt(tmp_path, capsys):
    store = open_store(str(tmp_path / "store"))
    for run_id, acc in (("r1", 0.86), ("r2", 0.87), ("r3", 0.88)):
        write_run(store, "lstm", run_id, acc)
    whole = store.read_bytes(f"lstm/r2/{METRICS}")
    store.write_bytes(f"lstm/r2/{METRICS}", whole[: len(whole) // 2])
    pointer = {"run_id": "r3", "test_accuracy": 0.88}
    store.write_bytes(f"lstm/{LATEST}", json.dumps(pointer).encode())
    code, out, err = cli(capsys, "list", "--output", store.uri)
    rows = [line.split() for line in out.splitlines()]
    assert code == 0 and err == ""
    assert ["lstm", "r1", "complete", "0.8600", "2"] in rows
    assert ["lstm", "r2", "corrupt", "-", "-"] in rows
    assert ["lstm", "r3", "complete", "0.8800", "2", "*"] in rows


@pytest.mark.parametrize(
    ("damage", "state"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "corrupt", id="nested-100k-deep"),
        pytest.param(b"[0.86, 2]", "corrupt", id="a-list"),
        pytest.param(b'"text"', "corrupt", id="a-string"),
    ],
)
def test_a_damaged_metrics_file_is_one_corrupt_run_the_others_unharmed(
    tmp_path, capsys, damage, state
):
    store = open_store(str(tmp_path / "store"))
    for run_id, acc in (("r1", 0.86), ("r2", 0.87)):
        write_run(store, "lstm", run_id, acc)
    store.write_bytes(f"lstm/r2/{METRICS}", damage)
    code, out, err = cli(capsys, "list", "--output", store.uri)
    rows = [line.split() for line in out.splitlines()]
    assert code == 0 and ["lstm", "r1", "complete", "0.8600", "2"] in rows
    assert ["lstm", "r2", state, "-", "-"] in rows
    code, out, err = cli(capsys, "show", "--output", store.uri, "--model", "lstm", "--run-id", "r2")
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"lstm/r2/{METRICS} is corrupt" in line
    code, _, err = cli(capsys, "compare", "lstm/r1", "lstm/r2", "--output", store.uri)
    assert code == 2 and f"lstm/r2/{METRICS} is corrupt" in err


def test_pull_to_a_file_is_refused_naming_it(tmp_path, capsys):
    store = open_store(str(tmp_path / "store"))
    write_run(store, "lstm", "r1", 0.86)
    dest = tmp_path / "a-file"
    dest.write_text("keep me")
    code, _, err = cli(capsys, "pull", "--output", store.uri, "--model", "lstm",
                       "--run-id", "r1", "--dest", str(dest))  # fmt: skip
    assert code == 2 and f"invalid dest {str(dest)!r}: it is a file" in err
    assert dest.read_text() == "keep me"


def test_checkpoints_are_pulled_only_when_asked(tmp_path, capsys):
    store = open_store(str(tmp_path / "store"))
    write_run(store, "lstm", "r1", 0.86)
    for flag, expected in (([], False), (["--checkpoints"], True)):
        dest = tmp_path / f"pulled-{bool(flag)}"
        code, _, err = cli(capsys, "pull", "--output", store.uri, "--model", "lstm",
                           "--run-id", "r1", "--dest", str(dest), *flag)  # fmt: skip
        assert code == 0, err
        assert (dest / "lstm" / "r1" / CHECKPOINT_DIR).exists() is expected
        assert (dest / "lstm" / "r1" / METRICS).exists()
