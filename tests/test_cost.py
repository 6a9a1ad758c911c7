"""metrics.json's cost: pod-seconds by phase, GPU-seconds, the node, from the Job's env."""

from __future__ import annotations

import pytest

from trainer import contract
from trainer.cost import run_cost

MARKS = {"started": 0.0, "data_loaded": 5.0, "tensorflow_imported": 7.0, "strategy_ready": 8.0,
         "model_ready": 10.0, "trained": 70.0, "tested": 72.0}  # fmt: skip


@pytest.mark.parametrize(
    "env, pods, gpu_seconds, node, spot",
    [
        pytest.param({}, 1, 0.0, None, False, id="laptop"),
        pytest.param({contract.GPUS_ENV: "1", contract.NODE_NAME_ENV: "n1",
                      contract.NODE_SPOT_ENV: "true"}, 1, 72.0, "n1", True, id="spot-gpu-pod"),
        pytest.param({contract.GPUS_ENV: "2", contract.WORKER_HOSTS_ENV: "a:1,b:1,c:1",
                      contract.COMPLETION_INDEX_ENV: "0", contract.NODE_SPOT_ENV: "false"},
                     3, 432.0, None, False, id="group-of-3"),
    ],
)  # fmt: skip
def test_cost_of_a_run(env, pods, gpu_seconds, node, spot):
    cost = run_cost(MARKS, env)
    assert cost["pods"] == pods
    assert cost["pod_seconds_by_phase"]["trained"] == 60.0 * pods  # the fit, every pod
    assert cost["pod_seconds"] == 72.0 * pods
    assert cost["gpu_seconds"] == gpu_seconds
    assert (cost["node"], cost["spot"]) == (node, spot)


def test_a_partial_set_of_marks_counts_what_it_has():
    cost = run_cost({"started": 0.0, "data_loaded": 2.5}, {})
    assert cost["pod_seconds_by_phase"] == {"data_loaded": 2.5}


def _attempt(store, started, training_from, resumed):
    import json

    doc = {"started": started, "training_from": training_from, "resumed_epochs": resumed}
    store.write_bytes(contract.attempt_key(started, "pod"), json.dumps(doc).encode())


def test_restarts_and_the_training_they_redid(tmp_path):
    from trainer.cost import restarts
    from trainer.storage import open_store

    store = open_store(str(tmp_path))
    epochs = [10.0, 12.0, 11.0]
    assert restarts(store, epochs) == {"restarts": 0, "redone_seconds": 0.0}
    _attempt(store, 1000.0, 1005.0, 0)  # trained epoch 1 (10 s), killed 7 s into epoch 2
    assert restarts(store, epochs) == {"restarts": 0, "redone_seconds": 0.0}
    _attempt(store, 1022.0, 1030.0, 1)  # resumed after epoch 1: 17 s spent, 10 kept
    assert restarts(store, epochs) == {"restarts": 1, "redone_seconds": 7.0}
    _attempt(store, 1040.0, None, 1)  # killed before training began: nothing redone
    _attempt(store, 1050.0, 1052.0, 1)  # so the one before it redid 10 s of epoch 2
    assert restarts(store, epochs) == {"restarts": 3, "redone_seconds": 17.0}
    store.write_bytes(contract.attempt_key(1060.0, "pod"), b"{cut")  # a torn record
    assert restarts(store, epochs)["restarts"] == 3
