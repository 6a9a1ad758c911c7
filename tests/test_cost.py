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
