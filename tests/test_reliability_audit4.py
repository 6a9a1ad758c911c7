"""The fourth hostile-input audit (docs/reliability.md, classes 1 and 3-7): the Kubernetes
client's own errors, unbounded predict input, a run whose files disagree, one store with
one answer, numbers from the environment and the store, a download outage.

Bad servers are real HTTP servers on loopback (a login proxy's HTML page, a refused port,
one that never answers, one that 404s): nothing is patched inside the client.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs import cancel, results, status, submit
from tests.test_predict_files import write_run
from trainer import commandline, contract, distribute, manifest
from trainer.config import ConfigError
from trainer.data.common import DataError
from trainer.data.sources import DownloadUnavailableError, download
from trainer.distribute import DistributeError
from trainer.lease import Lease, LeaseLostError, lease_seconds
from trainer.numbers import bounded_float, bounded_int
from trainer.runs import RunError, load_run
from trainer.storage import StoreContentError, open_store

pytestmark = pytest.mark.timeout(120)
# `sample_run`: one small trained run, shared with the prediction tests.
pytest_plugins = ["tests.trained"]


# --- loopback servers ---------------------------------------------------------------------


@contextlib.contextmanager
def http_server(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every request with `answer`; yields its URL."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            requests.append(f"{self.command} {self.path}")
            answer(self)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815 (http.server's names)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        http_server.requests = requests  # type: ignore[attr-defined]
        yield url
    finally:
        server.shutdown()
        server.server_close()


def reply(status_code: int, body: bytes, content_type: str):
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status_code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers (a hung proxy)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def refused_url() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }))  # fmt: skip
    return path


@pytest.fixture
def jobs_env(monkeypatch):
    from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT

    monkeypatch.setenv(contract.IMAGE_ENV, EXAMPLE_IMAGE)
    monkeypatch.setenv(contract.OUTPUT_ENV, EXAMPLE_OUTPUT)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


# --- class 1: the Kubernetes client's own errors -------------------------------------------

NOT_KUBERNETES = {
    "login-page-html": reply(200, b"<html><body>Please log in</body></html>", "text/html"),
    "plain-text": reply(200, b"ok", "text/plain"),
    "json-of-another-shape": reply(200, b'{"items": 5, "kind": 7}', "application/json"),
    "json-array": reply(200, b"[1, 2, 3]", "application/json"),
}
COMMANDS = {
    "status": (status.main, []),
    "cancel": (cancel.main, ["--run-id", "r1"]),
    "submit": (submit.main, ["--run-id", "r1", "--gpus", "0"]),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("answer", NOT_KUBERNETES)
def test_a_server_that_is_not_kubernetes_is_one_line_naming_it(
    jobs_env, tmp_path, monkeypatch, capsys, command, answer
):
    main, argv = COMMANDS[command]
    with http_server(NOT_KUBERNETES[answer]) as url:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", url)))
        code = main(argv)
    err = capsys.readouterr().err
    # Not bad input (exit 2): the command failed against the wrong server (exit 1).
    assert code == contract.EXIT_FAILED, err
    assert "Traceback" not in err and "pydantic" not in err.lower()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: the server at {url} answered HTTP 200"), line
    assert "not a Kubernetes API object" in line


@pytest.mark.parametrize(
    ("tolerations", "shown"),
    [
        pytest.param('{"key": 1}', "invalid value 1 for V1Toleration.key", id="number-key"),
        pytest.param('[{"key": "a", "value": 5}]', "invalid value 5 for V1Toleration.value",
                     id="number-value"),
        pytest.param('[{"key": "a", "tolerationSeconds": "soon"}]',
                     "invalid value 'soon' for V1Toleration.toleration_seconds",
                     id="text-seconds"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
def test_a_value_of_the_wrong_type_is_bad_input_naming_the_flag(
    jobs_env, tmp_path, monkeypatch, capsys, tolerations, shown, dry_run
):
    with http_server(reply(200, b"{}", "application/json")) as url:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", url)))
        argv = ["--run-id", "r1", "--gpus", "0", "--tolerations", tolerations]
        code = submit.main(argv + (["--dry-run"] if dry_run else []))
        sent = [r for r in http_server.requests if not r.startswith("GET")]  # type: ignore
    out, err = capsys.readouterr()
    assert code == contract.EXIT_BAD_INPUT, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {shown} (set by --tolerations)"), line
    assert out == "" and sent == []  # nothing printed as a manifest, nothing created


def test_any_other_kubernetes_client_error_is_one_line_not_a_traceback():
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException, ApiTypeError, ApiValueError

    from jobs._cli import client_error

    def outcome(e):
        return commandline.outcome(e, foreign=client_error)

    failed = contract.EXIT_FAILED
    assert outcome(ApiTypeError("unexpected keyword 'x'")) == (
        failed, "error: unexpected keyword 'x'")  # fmt: skip
    assert outcome(ApiValueError("missing namespace"))[0] == failed
    code, line = outcome(ApiException(status=500, reason="boom"))
    assert code == failed and "\n" not in line
    with pytest.raises(ValueError) as e:
        client.V1Toleration(key=1)
    code, line = outcome(e.value)
    assert code == contract.EXIT_BAD_INPUT and "\n" not in line and "V1Toleration" in line


# --- class 3: prediction input has a bound -------------------------------------------------


def predict_cli(capsys, *argv: str) -> tuple[int, str]:
    from trainer.predict.__main__ import main

    code = main(["--run", "no-such-run", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "special",
    [
        pytest.param("/dev/zero", id="endless-device"),
        pytest.param("fifo", id="fifo-without-writer"),
        pytest.param("dir", id="directory"),
    ],
)
def test_predict_refuses_special_files_without_reading_them(tmp_path, capsys, special):
    if special == "fifo":
        special = str(tmp_path / "reviews.txt")
        os.mkfifo(special)
    elif special == "dir":
        special = str(tmp_path)
    t0 = time.monotonic()
    code, err = predict_cli(capsys, "--file", special)
    assert time.monotonic() - t0 < 10  # never blocked on the FIFO nor read the device
    assert code == contract.EXIT_BAD_INPUT, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: --file {special!r} is not a regular file"), line


def test_one_review_and_one_input_have_a_bound(tmp_path, capsys):
    from trainer.predict import MAX_INPUT_BYTES, MAX_REVIEW_BYTES, MAX_REVIEWS

    long_line = tmp_path / "one-line.txt"
    content = b"great " * (MAX_REVIEW_BYTES // 6 + 1)
    long_line.write_bytes(content)
    code, err = predict_cli(capsys, "--file", str(long_line))
    assert code == 2 and f"line 1 is {len(content)} bytes" in err
    assert f"a review is at most {MAX_REVIEW_BYTES} bytes" in err
    code, err = predict_cli(capsys, "x" * (MAX_REVIEW_BYTES + 1))
    assert code == 2 and "review argument 1 is" in err and "at most" in err
    many = tmp_path / "many.txt"
    many.write_bytes(b"ok\n" * (MAX_REVIEWS + 1))
    code, err = predict_cli(capsys, "--file", str(many))
    assert code == 2 and f"has more than {MAX_REVIEWS} reviews" in err
    # stdin that never ends (`< /dev/zero`): read up to the bound, then refused.
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-m", "trainer.predict", "--run", "no-such-run"],
            stdin=zero, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    expected = f"error: stdin is more than {MAX_INPUT_BYTES} bytes: split it into several calls"
    assert done.stderr.strip() == expected


def test_predict_help_states_the_bounds():
    from trainer.predict import MAX_REVIEW_BYTES

    done = subprocess.run([sys.executable, "-m", "trainer.predict", "--help"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert f"a review is at most {MAX_REVIEW_BYTES} bytes" in done.stdout


# --- class 4: a run whose files disagree ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from trainer.config import TrainConfig
    from trainer.models import build_model

    paths = {}
    for name in contract.MODELS:
        cfg = TrainConfig(model=name, vocab_size=16, max_review_length=8, embedding_dim=4,
                          lstm_units=4)  # fmt: skip
        paths[name] = tmp_path_factory.mktemp(name) / contract.MODEL_FILE
        build_model(name, cfg).save(paths[name])
    return paths


def test_an_lstm_model_copied_into_a_mean_run_is_refused(tmp_path, tiny_models):
    run = write_run(tmp_path, tiny_models["lstm"])  # config.json says mean
    with pytest.raises(RunError) as e:
        load_run(str(run))
    assert str(e.value) == (
        f"{run}/{contract.MODEL_FILE} is a lstm model, but {contract.CONFIG} says 'mean': the "
        "run's files are damaged or mixed"
    )


def _with_manifest(run: Path, **record) -> None:
    files = {key: run / key for key in (contract.CONFIG, contract.WORD_INDEX, contract.MODEL_FILE)}
    doc = manifest.build("r1", "mean", 16, 8, files)
    doc.update(record)
    (run / contract.SUCCESS).write_text(json.dumps(doc))


@pytest.mark.parametrize("changed", [contract.MODEL_FILE, contract.WORD_INDEX, contract.CONFIG])
def test_a_file_changed_after_publishing_is_named_by_the_manifest(tmp_path, tiny_models, changed):
    run = write_run(tmp_path, tiny_models["mean"])
    _with_manifest(run)
    load_run(str(run))  # as published: loads
    if changed == contract.MODEL_FILE:
        (run / changed).write_bytes(tiny_models["mean"].read_bytes() + b"\0")
    else:
        doc = json.loads((run / changed).read_text())
        (run / changed).write_text(json.dumps(doc, indent=1))  # same content, other bytes
    with pytest.raises(
        StoreContentError, match=rf"^{run}/{changed} is not the file this run published"
    ):
        load_run(str(run))


def test_a_manifest_of_other_sizes_is_named(tmp_path, tiny_models):
    run = write_run(tmp_path, tiny_models["mean"])
    _with_manifest(run, vocab_size=5000)
    with pytest.raises(
        StoreContentError, match="vocab_size is 16, the run's manifest in _SUCCESS records 5000"
    ):
        load_run(str(run))


def test_publishing_records_every_file_and_results_checks_them(
    sample_run, shared_tarball, tmp_path, capsys
):
    run = Path(sample_run.run_dir)
    doc = json.loads((run / contract.SUCCESS).read_text())
    assert set(doc["files"]) == set(manifest.RECORDED)
    for key, digest in doc["files"].items():
        assert manifest.digest(run / key) == digest, key
    # jobs.results show reads metrics.json: a metrics.json edited since is exit 2, named.
    import shutil

    store = tmp_path / "store"
    shutil.copytree(run, store / doc["model"] / doc["run_id"])
    metrics = store / doc["model"] / doc["run_id"] / contract.METRICS
    edited = json.loads(metrics.read_text())
    edited["test_accuracy"] = 0.99
    metrics.write_text(json.dumps(edited))
    code = results.main(["show", "--output", str(store), "--model", doc["model"],
                         "--run-id", doc["run_id"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"{contract.METRICS} is not the file this run published" in err
    # The trainer started again on the complete run promotes it on its published metrics
    # only: the edited file is named, exit 2, and latest.json is not written.
    from tests.helpers import run_trainer, trainer_args
    from tests.trained import SAMPLE

    done = run_trainer(trainer_args(
        model="mean", data=shared_tarball, output=store,
        run_id=doc["run_id"], epochs=1, sample=SAMPLE, cpu_devices=2, neighbours="great", k=3,
        cache_dir=sample_run.cache,
    ))  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{contract.METRICS} is not the file this run published" in done.stderr
    assert not (store / doc["model"] / contract.LATEST).exists()


# --- class 5: one store, one answer ---------------------------------------------------------


@pytest.mark.parametrize(
    "pointer",
    [
        b'{"run_id": "../../x"}',
        b"[1, 2]",
        b"{not json",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"run_id": "r1", "test_accuracy": NaN}',
        b'{"run_id": "r1", "test_accuracy": 1e308}',
        b'{"run_id": "r1", "test_accuracy": "0.9"}',
    ],
    ids=[
        "escaping",
        "a-list",
        "malformed",
        "nested-100k-deep",
        "nan-accuracy",
        "huge-accuracy",
        "text-accuracy",
    ],
)
def test_a_bad_latest_json_is_the_same_exit_in_predict_and_results(tmp_path, capsys, pointer):
    from trainer.predict.__main__ import main as predict_main

    store = open_store(str(tmp_path / "store"))
    store.write_bytes(f"mean/{contract.LATEST}", pointer)
    codes = {
        "predict": predict_main(["--run", f"{store.uri}/mean/latest", "great film"]),
        "results show": results.main(["show", "--output", store.uri, "--model", "mean"]),
        "results pull": results.main(
            ["pull", "--output", store.uri, "--model", "mean", "--dest", str(tmp_path / "dest")]
        ),  # fmt: skip
    }
    err = capsys.readouterr().err
    assert set(codes.values()) == {contract.EXIT_BAD_INPUT}, (codes, err)
    assert len(err.strip().splitlines()) == 3 and "Traceback" not in err


@pytest.mark.parametrize("accuracy", ["NaN", "Infinity", "1e308", "-0.5", "1.5", '"0.9"', "true"])
def test_a_pointer_accuracy_out_of_bounds_is_named(tmp_path, capsys, accuracy):
    from trainer.promotion import PointerError, parse_pointer

    raw = f'{{"run_id": "r1", "test_accuracy": {accuracy}}}'.encode()
    with pytest.raises(PointerError, match="is not a number from 0 to 1"):
        parse_pointer(raw, "STORE/mean/latest.json", "mean")
    assert parse_pointer(b'{"run_id": "r1", "test_accuracy": 0.5}', "x", "mean")["run_id"] == "r1"


def test_a_latest_json_that_is_a_directory_is_the_same_exit_everywhere(tmp_path, capsys):
    from trainer.predict.__main__ import main as predict_main

    store = tmp_path / "store"
    (store / "mean" / contract.LATEST).mkdir(parents=True)
    codes = {
        predict_main(["--run", f"{store}/mean/latest", "great film"]),
        results.main(["show", "--output", str(store), "--model", "mean"]),
        results.main(["list", "--output", str(store)]),
    }
    err = capsys.readouterr().err
    assert codes == {contract.EXIT_BAD_INPUT}, err
    assert err.count("latest.json is a directory, not a file") == 3


def test_a_missing_run_is_the_same_exit_in_predict_and_results(tmp_path, capsys):
    from trainer.predict.__main__ import main as predict_main

    store = open_store(str(tmp_path / "store"))
    store.write_bytes("mean/r1/config.json", b"{}")  # started, never finished
    codes = {
        predict_main(["--run", f"{store.uri}/mean/r1", "great film"]),
        results.main(["show", "--output", store.uri, "--model", "mean", "--run-id", "r1"]),
    }
    assert codes == {contract.EXIT_BAD_INPUT}, capsys.readouterr().err


# --- class 6: numbers from the environment and the store ------------------------------------

UNICODE_DIGITS = ["²", "١", "٣", "１"]  # superscript two, Arabic-Indic one and three, fullwidth


@pytest.mark.parametrize("raw", UNICODE_DIGITS + ["1e3", "0x1", " ", "1_0", "nan"])
def test_the_bounded_parser_takes_ascii_digits_only(raw):
    with pytest.raises(ValueError, match="expected an integer from 0 to 100"):
        bounded_int(raw, "N", 0, 100)
    assert bounded_int(" 42 ", "N", 0, 100) == 42


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "Infinity", "1e308", "1e309", "²", True,
                                 10**400, float("nan")])  # fmt: skip
def test_the_bounded_float_parser_refuses_the_unbounded(raw):
    with pytest.raises(ValueError, match="expected a number from"):
        bounded_float(raw, "T", 0, 1e6)
    assert bounded_float("2.5", "T", 0, 1e6) == 2.5


HOSTS = "w0:2222,w1:2222,w2:2222"


@pytest.mark.parametrize("index", UNICODE_DIGITS)
def test_a_completion_index_of_unicode_digits_is_one_line(index):
    env = {contract.WORKER_HOSTS_ENV: HOSTS, contract.COMPLETION_INDEX_ENV: index}
    with pytest.raises(DistributeError, match=f"invalid JOB_COMPLETION_INDEX '{index}'"):
        distribute.tf_config_from_env(env)


@pytest.mark.parametrize("port", UNICODE_DIGITS + ["99999", "0"])
def test_ports_of_unicode_digits_are_one_line(port):
    with pytest.raises(DistributeError, match="expected host:port"):
        distribute.tf_config_from_env({contract.WORKER_HOSTS_ENV: f"w0:{port},w1:2222",
                                       contract.COMPLETION_INDEX_ENV: "0"})  # fmt: skip
    cfg = {"cluster": {"worker": [f"w0:{port}", "w1:2222"]}, "task": {"type": "worker",
                                                                      "index": 0}}  # fmt: skip
    with pytest.raises(DistributeError, match="expected a list of host:port"):
        distribute.tf_config_from_env({"TF_CONFIG": json.dumps(cfg)})


def test_a_tf_config_nested_100k_deep_is_one_line():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DistributeError, match="invalid TF_CONFIG"):
        distribute.tf_config_from_env({"TF_CONFIG": deep})
    deep_object = '{"cluster": ' + deep + "}"
    with pytest.raises(DistributeError, match="invalid TF_CONFIG"):
        distribute.tf_config_from_env({"TF_CONFIG": deep_object})


@pytest.mark.parametrize("raw", ["٣", "１", "²"])
def test_other_environment_numbers_take_ascii_digits_only(monkeypatch, raw):
    from trainer.data.common import max_data_bytes
    from trainer.storage import StoreError, gcs_deadline

    monkeypatch.setenv(contract.MAX_DATA_BYTES_ENV, raw * 3)
    with pytest.raises(DataError, match=f"invalid {contract.MAX_DATA_BYTES_ENV}"):
        max_data_bytes()
    monkeypatch.setenv(contract.GCS_DEADLINE_ENV, raw)
    with pytest.raises(StoreError, match=f"invalid {contract.GCS_DEADLINE_ENV}"):
        gcs_deadline()
    for name in (contract.PEER_TIMEOUT_ENV, contract.COLLECTIVE_TIMEOUT_ENV):
        with pytest.raises(DistributeError, match=f"invalid {name}"):
            distribute.peer_timeout_from_env(
                {name: raw}
            ) if name == contract.PEER_TIMEOUT_ENV else distribute.collective_timeout_from_env(
                {name: raw}
            )


@pytest.mark.parametrize("raw", ["inf", "1e308", "nan", "Infinity", "0", "-1", "²", "86401"])
def test_a_lease_period_out_of_bounds_is_bad_input(monkeypatch, raw):
    monkeypatch.setenv(contract.LEASE_SECONDS_ENV, raw)
    with pytest.raises(ConfigError, match=f"invalid {contract.LEASE_SECONDS_ENV} '{raw}'"):
        lease_seconds()


@pytest.mark.parametrize("expires", ["1e308", '"nan"', '"Infinity"', "1e400", '"²"', "true",
                                     "-1e308"])  # fmt: skip
def test_a_foreign_lease_with_an_unbounded_time_is_taken_over(tmp_path, expires):
    store = open_store(str(tmp_path / "store")).child("mean", "r1")
    store.write_bytes(contract.LEASE, f'{{"owner": "x", "expires": {expires}}}'.encode())
    said: list[str] = []
    lease = Lease(store, seconds=2, log=said.append)
    lease.acquire()  # no OverflowError, ValueError, nor a wait for a lease that never ends
    try:
        assert json.loads(store.read_bytes(contract.LEASE))["owner"] == lease.owner
        assert said == ["taking over the expired lease of <unreadable lease>"]
    finally:
        lease.release()


class _FailingRenewal:
    """A store whose renewal raises what no one expected: the thread must not die quietly."""

    def __init__(self, store):
        self._store, self.calls = store, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write_versioned(self, key, data, version):
        self.calls += 1
        if self.calls > 1:
            raise OverflowError("timestamp out of range")
        return self._store.write_versioned(key, data, version)


def test_a_lease_renewal_that_dies_stops_the_run_resumable(tmp_path):
    store = _FailingRenewal(open_store(str(tmp_path / "store")).child("mean", "r1"))
    said: list[str] = []
    lease = Lease(store, seconds=0.3, log=said.append)  # type: ignore[arg-type]
    lease.acquire()
    lease.check()  # held
    deadline = time.monotonic() + 10
    while not lease.lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(LeaseLostError) as e:
        lease.check()
    lease.release()
    assert "the lease renewal stopped (OverflowError: timestamp out of range)" in str(e.value)
    assert said and said[0].startswith("warning: the lease renewal stopped")
    code, line = commandline.outcome(e.value, resumable=True)
    assert code == contract.EXIT_PREEMPTED and line.startswith("stopped, resumable: ")


def test_the_trainer_refuses_an_infinite_lease_period_in_one_line(tmp_path):
    from tests.helpers import run_trainer, trainer_args

    done = run_trainer(
        trainer_args(output=str(tmp_path / "out"), data=str(tmp_path / "none.npz")),
        **{contract.LEASE_SECONDS_ENV: "inf"},
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()  # before the (missing) data is looked at
    assert line.startswith(f"error: invalid {contract.LEASE_SECONDS_ENV} 'inf': expected"), line


def test_checkpoint_keys_of_unicode_digits_are_not_checkpoints():
    assert contract.checkpoint_epoch("checkpoints/epoch-0002.keras") == 2
    for digits in ("١٢٣٤", "０００２", "²²²²"):
        assert contract.checkpoint_epoch(f"checkpoints/epoch-{digits}.keras") is None


@pytest.mark.parametrize(
    "state",
    [b"[" * 100_000 + b"]" * 100_000, b'{"history": 5, "epoch_seconds": []}', b"[]"],
    ids=["nested-100k-deep", "history-a-number", "a-list"],
)
def test_a_damaged_checkpoint_state_is_skipped_not_a_traceback(tmp_path, state):
    from trainer import checkpoints

    store = open_store(str(tmp_path / "store")).child("mean", "r1")
    store.write_bytes(contract.checkpoint_key(1), b"not a model")
    store.write_bytes(contract.state_key(1), state)
    said: list[str] = []
    assert checkpoints.restore_newest(store, tmp_path, said.append) is None
    assert said[0].startswith("checkpoint of epoch 1 is unreadable"), said


@pytest.mark.parametrize("value", ["٣", "1000000000", "0", "2.5"])
def test_predict_batch_size_is_bounded(capsys, value):
    code, err = predict_cli(capsys, "--batch-size", value, "great")
    assert code == 2 and err.startswith("error: invalid --batch-size"), err


# --- class 7: a download outage is not bad input ---------------------------------------------


def _outcome_of(url: str, tmp_path: Path, **kw) -> tuple[int, str]:
    with pytest.raises(Exception) as e:
        download(url + "/imdb.npz", tmp_path / "d" / "imdb.npz", **kw)
    known = commandline.outcome(e.value, resumable=True)
    assert known is not None, repr(e.value)
    assert not list((tmp_path / "d").glob(".*"))  # no temp file left
    return known


def test_a_refused_connection_is_an_outage(tmp_path):
    code, line = _outcome_of(refused_url(), tmp_path)
    assert code == contract.EXIT_PREEMPTED, line
    assert "Connection refused" in line and "a network outage" in line


def test_a_server_that_never_answers_is_an_outage(tmp_path):
    with silent_server() as url:
        t0 = time.monotonic()
        code, line = _outcome_of(url, tmp_path, timeout=1)
    assert time.monotonic() - t0 < 30
    assert code == contract.EXIT_PREEMPTED and "timed out" in line, line


def test_a_name_that_does_not_resolve_is_an_outage(tmp_path):
    # .invalid never resolves (RFC 2606): the resolver's answer, like a DNS outage, is gaierror.
    code, line = _outcome_of("http://imdb-train-data.invalid", tmp_path, timeout=5)
    assert code == contract.EXIT_PREEMPTED and "gaierror" in line, line


@pytest.mark.parametrize("status_code", [500, 502, 503, 429])
def test_a_server_in_trouble_is_an_outage(tmp_path, status_code):
    with http_server(reply(status_code, b"busy", "text/plain")) as url:
        code, line = _outcome_of(url, tmp_path)
    assert code == contract.EXIT_PREEMPTED and f"HTTP {status_code}" in line, line


@pytest.mark.parametrize("status_code", [404, 403, 410])
def test_data_that_does_not_exist_is_bad_input(tmp_path, status_code):
    with http_server(reply(status_code, b"no", "text/plain")) as url:
        code, line = _outcome_of(url, tmp_path)
    assert code == contract.EXIT_BAD_INPUT and f"HTTP {status_code}" in line, line


def test_a_checksum_mismatch_is_bad_input(tmp_path):
    with http_server(reply(200, b"not the npz", "application/octet-stream")) as url:
        code, line = _outcome_of(url, tmp_path, sha256="0" * 64)
    assert code == contract.EXIT_BAD_INPUT and "expected " + "0" * 64 in line, line
    with pytest.raises(DataError), http_server(reply(200, b"x", "text/plain")) as url:
        download(url + "/x", tmp_path / "e" / "x", sha256="0" * 64)
    with pytest.raises(DownloadUnavailableError):
        download(refused_url() + "/x", tmp_path / "f" / "x")


def test_a_connection_cut_mid_download_is_an_outage(tmp_path):
    def short(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)  # then the connection closes: an IncompleteRead
        handler.close_connection = True

    with http_server(short) as url:
        # With the checksum `--data keras` has: a cut transfer is not a checksum mismatch.
        code, line = _outcome_of(url, tmp_path, sha256="0" * 64)
    assert code == contract.EXIT_PREEMPTED, line
    assert "the connection closed after 10 of 100000 bytes" in line, line


def test_the_trainer_with_keras_data_and_no_network_exits_resumable(tmp_path):
    # The default `--data keras` through a proxy that refuses (as a DNS or network outage
    # would): the run is retried by its Job (75), not failed for good (2).
    from tests.helpers import run_trainer, trainer_args

    proxy = refused_url()
    done = run_trainer(
        trainer_args(model="mean", output=str(tmp_path / "out"), run_id="dl1", epochs=1),
        **{"https_proxy": proxy, "HTTPS_PROXY": proxy, contract.CACHE_ENV: str(tmp_path / "c")},
    )
    assert done.returncode == contract.EXIT_PREEMPTED, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("stopped, resumable: cannot download https://"), line
    assert not (tmp_path / "out" / "mean" / "dl1" / contract.SUCCESS).exists()
