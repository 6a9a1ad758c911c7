"""The trainer's command line: values parsed by their TrainConfig type, not by their look."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_trainer, write_tarball
from trainer import contract, flags
from trainer.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--promote", "false"], {"promote": False}),
        (["--promote", "no"], {"promote": False}),
        (["--promote=off"], {"promote": False}),
        (["--promote"], {"promote": True}),
        (["--promote", "--epochs", "2"], {"promote": True, "epochs": 2}),
        (["--run-id", "1e3"], {"run_id": "1e3"}),
        (["--run-id", "0123"], {"run_id": "0123"}),
        (["--learning-rate", "1e-3"], {"learning_rate": 0.001}),
        (["--neighbours", "great,bad"], {"neighbours": ("great", "bad")}),
    ],
)
def test_values_are_parsed_by_field_type(argv, expected):
    cfg = flags.config_from_args(argv)
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epoch", "1"], "unknown flag --epoch"),
        (["--no-promote"], "unknown flag --no-promote"),
        (["--promote", "maybe"], "invalid --promote 'maybe'"),
        (["--epochs"], "flag --epochs needs a value"),
        (["--epochs", "1", "--epochs", "2"], "flag --epochs given twice"),
        (["mean"], "unexpected argument 'mean'"),
        (["--epochs", "1.5"], "invalid epochs 1.5: expected a positive integer"),
        (["--run-id", "r1\n"], "invalid run-id 'r1\\n'"),
    ],
)
def test_bad_command_lines_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=None) as info:
        flags.config_from_args(argv)
    assert message in str(info.value)


def test_resume_keys_come_from_field_metadata():
    from trainer.config import resume_keys

    keys = resume_keys()
    assert "epochs" in keys and "model" in keys and "seed" in keys
    assert not {"output", "run_id", "promote", "k", "eval_batch_size"} & set(keys)


def test_output_default_is_shared_with_jobs_results(monkeypatch):
    monkeypatch.delenv(contract.OUTPUT_ENV, raising=False)
    assert TrainConfig().output == contract.DEFAULT_OUTPUT
    monkeypatch.setenv(contract.OUTPUT_ENV, "gs://bkt/elsewhere")
    assert TrainConfig().output == "gs://bkt/elsewhere"
    from trainer.storage import open_store

    assert open_store(None).uri == "gs://bkt/elsewhere"


def test_help_is_generated_and_has_no_library_noise():
    proc = run_trainer(["--help"], timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "--max-review-length INT  (default: 100)" in proc.stdout
    assert "INFO:" not in proc.stdout


@pytest.mark.slow
def test_run_id_1e3_and_promote_false_through_the_real_trainer(tmp_path):
    data = write_tarball(tmp_path / "tiny.tar.gz")
    out = tmp_path / "out"
    args = ["--model", "mean", "--data", str(data), "--output", str(out), "--epochs", "1"]
    proc = run_trainer([*args, "--run-id", "1e3", "--promote", "false", "--cache-dir",
                        str(tmp_path / "cache")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = out / "mean" / "1e3"
    assert (run / contract.SUCCESS).exists()
    assert json.loads((run / contract.CONFIG).read_text())["config"]["run_id"] == "1e3"
    assert not (out / "mean" / contract.LATEST).exists()
    # A query word the vocabulary lacks is one warning line, not a silent empty list.
    assert "warning: not in the vocabulary, no neighbours: excellent" in proc.stdout
    # Our own lines only: TensorFlow's start-up lines are hidden unless asked for.
    assert "cuda" not in proc.stderr.lower() and "oneDNN" not in proc.stderr, proc.stderr


def test_seed_minus_one_is_derived_from_the_run_id_and_recorded():
    seeds = {}
    for run_id in ("20261129-030000-ab12", "20261206-030000-cd34"):
        cfg = TrainConfig(run_id=run_id, seed=-1)
        cfg.resolve_seed()
        again = TrainConfig(run_id=run_id, seed=-1)
        again.resolve_seed()
        assert cfg.seed == again.seed >= 0  # a resumed run keeps its seed
        seeds[run_id] = cfg.to_dict()["seed"]
    assert len(set(seeds.values())) == 2  # each scheduled run trains differently
    with pytest.raises(ConfigError, match="invalid seed -2"):
        TrainConfig(seed=-2)


def test_scheduled_runs_derive_their_seed_and_keep_ties_with_the_incumbent():
    from jobs.chart_objects import build_cronjob
    from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT, JobSpec

    spec = JobSpec(model="mean", run_id="r1", image=EXAMPLE_IMAGE, output=EXAMPLE_OUTPUT,
                   accelerator="nvidia-l4")  # fmt: skip
    pod = build_cronjob(spec).spec.job_template.spec.template.spec
    args = pod.containers[0].args
    cfg = flags.config_from_args([a if not a.startswith("$(") else "r1" for a in args])
    assert (cfg.seed, cfg.tolerance) == (-1, 0.0)
