"""jobs.submit as a CLI: --dry-run YAML, --help, bad input, and no TensorFlow on the way."""

from __future__ import annotations

import os
import subprocess
import sys

import fire
import pytest
import yaml

from jobs import submit
from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT
from tests.fakes.k8s_checks import ROOT, restricted_violations, validate
from tests.helpers import dry_run
from trainer.contract import IMAGE_ENV, OUTPUT_ENV


@pytest.fixture(autouse=True)
def image_and_output(monkeypatch):
    """jobs.submit's required image and bucket, given the way a user's shell would."""
    monkeypatch.setenv(IMAGE_ENV, EXAMPLE_IMAGE)
    monkeypatch.setenv(OUTPUT_ENV, EXAMPLE_OUTPUT)


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        (IMAGE_ENV, "error: missing image: pass --image REGISTRY/imdb-train:TAG or set "
         "IMDB_TRAIN_IMAGE; build and push it with `make image push"),
        (OUTPUT_ENV, "error: missing output: pass --output gs://BUCKET/PREFIX or set "
         "IMDB_TRAIN_OUTPUT"),
    ],
)  # fmt: skip
def test_image_and_output_are_required(capsys, monkeypatch, unset, message):
    monkeypatch.delenv(unset)
    assert submit.main(["--model", "lstm", "--dry-run"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(message), out.err
    assert len(out.err.strip().splitlines()) == 1


def test_dry_run_lstm_prints_one_valid_restricted_gpu_job(capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # no cluster needed
    (job,) = dry_run(capsys, "--model", "lstm")
    validate(job)
    assert restricted_violations(job) == []
    assert job["kind"] == "Job"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["args"][:2] == ["--model", "lstm"]


def test_dry_run_all_prints_one_job_per_model_with_one_run_id(capsys):
    docs = dry_run(capsys, "--model", "all")
    assert [d["spec"]["template"]["spec"]["containers"][0]["args"][1] for d in docs] == [
        "mean", "lstm",
    ]  # fmt: skip
    run_ids = {d["metadata"]["labels"]["imdb-train/run-id"] for d in docs}
    assert len(run_ids) == 1


def test_default_run_ids_differ_per_submission(capsys):
    first = dry_run(capsys)[0]["metadata"]["name"]
    second = dry_run(capsys)[0]["metadata"]["name"]
    assert first != second


def test_fire_component_directly(capsys):
    fire.Fire(submit.submit, command=["--model", "mean", "--run-id", "123", "--dry-run"])
    (job,) = yaml.safe_load_all(capsys.readouterr().out)
    assert job["metadata"]["name"] == "imdb-train-mean-123"  # int 123 coerced to a name


def test_workers_dry_run_prints_service_then_indexed_job(capsys):
    svc, job = dry_run(capsys, "--workers", "2", "--run-id", "r1")
    assert (svc["kind"], job["kind"]) == ("Service", "Job")
    assert job["spec"]["completionMode"] == "Indexed"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "foo"], "error: invalid model 'foo': expected one of mean, lstm, all"),
        (["--epochs", "0"], "error: invalid epochs 0: expected an integer >= 1"),
        (["--run-id", "Has_Caps"], "error: invalid run id 'Has_Caps'"),
        (["--output", "bucket/x"], "error: invalid output 'bucket/x'"),
        (["--gpus", "2", "--batch-size", "3"], "error: invalid batch size 3"),
        (["--extra-args", "--promote"], "error: invalid extra args True"),
        (["--workers", "2", "--peer-timeout", "0"], "error: invalid peer timeout 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert submit.main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def env():
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KUBECONFIG": "/nonexistent",
        IMAGE_ENV: EXAMPLE_IMAGE,
        OUTPUT_ENV: EXAMPLE_OUTPUT,
    }


def test_help_works_without_a_cluster():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.submit", "--help"],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    # fire's help text, on stdout, without its "INFO: Showing help" line or a pager
    assert "--dry_run" in result.stdout and "GLOBAL batch size" in result.stdout
    assert "INFO:" not in result.stdout


def test_cli_bad_input_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.submit", "--model", "foo", "--dry-run"],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "error: invalid model 'foo': expected one of mean, lstm, all\n"


def test_jobs_never_import_tensorflow():
    code = (
        # Every module of jobs/, so that one split off a command is checked too.
        "import importlib, pkgutil, sys, jobs\n"
        "for m in pkgutil.iter_modules(jobs.__path__): importlib.import_module('jobs.' + m.name)\n"
        "jobs.submit.main(['--model', 'all', '--dry-run'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("typed", ["0x10", "1e3", "007", "1_000", "True", "[1]"])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_identifiers_are_strings_exactly_as_typed(capsys, typed, form):
    """fire would read --run-id 0x10 as 16 (and a Job for run 16 would be made, shown and
    cancelled): every id, name and path on the command lines is the string typed, valid
    or refused as such."""
    from jobs import submit

    argv = ["--run-id", typed] if form == "separate" else [f"--run-id={typed}"]
    if typed in ("1_000", "True", "[1]"):  # not run ids as typed (fire: 1000, True, a list)
        assert submit.main(["--dry-run", *argv]) == 2
        assert f"invalid run id '{typed}'" in capsys.readouterr().err
        return
    (job,) = [o for o in dry_run(capsys, *argv, "--model", "mean") if o["kind"] == "Job"]
    assert job["metadata"]["labels"]["imdb-train/run-id"] == typed
    assert job["metadata"]["name"] == f"imdb-train-mean-{typed}"


def test_submit_takes_dash_n_as_the_namespace(capsys):
    """`-n ml` used to exit 2: fire found it ambiguous (namespace, name, node_selector)."""
    objs = dry_run(capsys, "-n", "ml", "--model", "mean", "--gpus", "0")
    assert {o["metadata"]["namespace"] for o in objs} == {"ml"}
    objs = dry_run(capsys, "-n=ml2", "--model", "mean", "--gpus", "0")
    assert {o["metadata"]["namespace"] for o in objs} == {"ml2"}


@pytest.mark.parametrize("command", ["submit", "status", "logs", "cancel"])
def test_the_jobs_commands_share_their_short_flags(command):
    import importlib
    import inspect

    from jobs import _cli

    module = importlib.import_module(f"jobs.{command}")
    params = inspect.signature(getattr(module, command)).parameters
    if command == "submit":  # its options are JobSpec's fields (jobs.submit._signature)
        params = module.submit.__signature__.parameters
    for short, long in _cli.SHORT_FLAGS.items():
        assert _cli.expand_short_flags([short, "x"]) == [long, "x"]
        assert long[2:].replace("-", "_") in params, (command, short)
