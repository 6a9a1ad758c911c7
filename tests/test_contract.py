"""One contract: the model registry, the chart, submit and the trainer agree with
trainer/contract.py on model names, exit codes, env names, the worker port and run ids."""

from __future__ import annotations

import json
import re

import pytest

from jobs import spec
from tests.fakes.k8s_checks import CHART, helm_template
from tests.helpers import dry_run
from trainer import contract, flags


def test_model_registry_builds_exactly_the_contract_models():
    from trainer import models

    assert tuple(models.BUILDERS) == contract.MODELS


def test_chart_schema_enum_is_the_contract_models():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert tuple(schema["definitions"]["model"]["enum"]) == contract.MODELS


def test_submit_choices_are_the_contract_models():
    assert (*contract.MODELS, "all") == spec.MODEL_CHOICES
    assert spec.resolve_models("all") == list(contract.MODELS)


def _containers(objs):
    for obj in objs:
        if obj["kind"] not in ("Job", "CronJob"):
            continue
        body = obj["spec"]
        if obj["kind"] == "CronJob":
            body = body["jobTemplate"]["spec"]
        yield body, body["template"]["spec"]["containers"][0]


# Ours from the contract, plus the few that HOME-less images and TensorFlow read.
ENV_NAMES = {v for k, v in vars(contract).items() if k.endswith("_ENV") and isinstance(v, str)} | {
    "HOME",
    "MPLCONFIGDIR",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
}


def _check_job_objects(objs) -> int:
    """Exit codes, env names and ports in rendered Jobs/CronJobs; returns how many it saw."""
    seen = 0
    for job_spec, container in _containers(objs):
        seen += 1
        rules = job_spec["podFailurePolicy"]["rules"]
        codes = [r["onExitCodes"]["values"] for r in rules if "onExitCodes" in r]
        assert codes == [
            [contract.EXIT_GROUP_STOPPED],
            [contract.EXIT_GROUP_NOT_FORMED],
            list(contract.PERMANENT_EXITS),
            [contract.EXIT_NO_GPU],
        ]
        assert contract.PERMANENT_EXITS == (contract.EXIT_BAD_INPUT, contract.EXIT_DIVERGED)
        names = {e["name"] for e in container.get("env", [])}
        assert names <= ENV_NAMES, names - ENV_NAMES
        for port in container.get("ports", []):
            assert (port["name"], port["containerPort"]) == (
                contract.WORKER_PORT_NAME,
                contract.WORKER_PORT,
            )
        for arg in container["args"]:
            if arg.startswith("--"):
                assert arg[2:].replace("-", "_") in flags.fields(), arg
    for obj in objs:
        if obj["kind"] == "Service":
            (port,) = obj["spec"]["ports"]
            assert (port["name"], port["port"]) == (contract.WORKER_PORT_NAME, contract.WORKER_PORT)
    return seen


def test_chart_uses_the_contract_exit_codes_and_env_names():
    objs = helm_template(
        "image.repository=reg/imdb-train",
        "output=gs://bkt/imdb",
        "retrain.models={mean,lstm}",
        "accelerator=nvidia-l4",
    )
    assert _check_job_objects(objs) == len(contract.MODELS)


def test_submit_uses_the_contract_exit_codes_env_names_and_port(capsys):
    objs = dry_run(capsys, "--model", "all", "--workers", "2", "--output", "gs://bkt/imdb")
    assert _check_job_objects(objs) == 2
    hosts = [
        e["value"]
        for _, c in _containers(objs)
        for e in c.get("env", [])
        if e["name"] == contract.WORKER_HOSTS_ENV
    ]
    assert hosts and all(h.endswith(f":{contract.WORKER_PORT}") for h in hosts[0].split(","))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("20261129-143000-ab12", True),
        ("r1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("r1\n", False),
        ("Bad", False),
        ("../x", False),
        ("-r1", False),
        ("1e3", True),
        ("", False),
        (1000, False),
    ],
)
def test_run_id_format(value, ok):
    assert contract.is_run_id(value) is ok


def test_new_run_ids_are_valid_and_distinct():
    ids = {contract.new_run_id() for _ in range(50)}
    assert len(ids) > 1 and all(contract.is_run_id(i) for i in ids)


def test_checkpoint_keys_round_trip():
    assert contract.checkpoint_epoch(contract.checkpoint_key(7)) == 7
    assert contract.checkpoint_epoch(contract.state_key(7)) is None
    assert contract.checkpoint_epoch(contract.checkpoint_key(7) + "\n") is None


def test_trainer_help_lists_every_config_field_once():
    from trainer.__main__ import SUMMARY
    from trainer.config import TrainConfig

    text = flags.help_text("python -m trainer", SUMMARY)
    for name in flags.fields():
        assert len(re.findall(rf"^  {flags.flag(name)} ", text, re.M)) == 1, name
        assert flags.fields()[name].metadata["help"] in text
    assert f"(default: {TrainConfig().epochs!r})" in text
