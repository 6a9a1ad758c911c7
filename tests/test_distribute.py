"""The multi-worker contract: TF_CONFIG from the Indexed Job's environment, its validation,
who is chief, the collective timeout, and how a broken worker group is reported."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from tests.helpers import free_ports
from trainer import contract, distribute
from trainer.distribute import DistributeError

HOSTS = "job-0.svc:2222,job-1.svc:2222,job-2.svc:2222"
WORKERS = ["job-0.svc:2222", "job-1.svc:2222", "job-2.svc:2222"]

CHIEF_AND_WORKER = {
    "cluster": {"chief": ["c:1"], "worker": ["w:1"]},
    "task": {"type": "chief", "index": 0},
}


def worker_config(index: int, workers=WORKERS) -> dict:
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_completion_index_gets_its_own_task(index):
    env = {distribute.WORKER_HOSTS_ENV: HOSTS, "JOB_COMPLETION_INDEX": str(index)}
    assert distribute.tf_config_from_env(env) == worker_config(index)
    assert distribute.is_multi_worker(env)
    assert distribute.is_chief(env) is (index == 0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, None, id="nothing-set"),
        pytest.param({"TF_CONFIG": ""}, None, id="empty-tf-config"),
        pytest.param({distribute.WORKER_HOSTS_ENV: "a:1"}, None, id="one-host"),
        pytest.param({distribute.WORKER_HOSTS_ENV: " , "}, None, id="blank-hosts"),
        pytest.param(
            {distribute.WORKER_HOSTS_ENV: " a:1 , b:2 ,", "JOB_COMPLETION_INDEX": "1"},
            worker_config(1, ["a:1", "b:2"]),
            id="hosts-are-trimmed",
        ),
        pytest.param(
            {
                "TF_CONFIG": json.dumps(worker_config(1, ["x:1", "y:2"])),
                distribute.WORKER_HOSTS_ENV: HOSTS,
                "JOB_COMPLETION_INDEX": "0",
            },
            worker_config(1, ["x:1", "y:2"]),
            id="tf-config-wins",
        ),
        pytest.param(
            {"TF_CONFIG": json.dumps(CHIEF_AND_WORKER)}, CHIEF_AND_WORKER, id="chief-and-worker"
        ),
    ],
)
def test_tf_config_from_env(env, expected):
    assert distribute.tf_config_from_env(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="single-process"),
        pytest.param({"TF_CONFIG": json.dumps(worker_config(0, ["a:1"]))}, id="group-of-one"),
    ],
)
def test_single_process_is_chief_and_not_multi_worker(env):
    assert not distribute.is_multi_worker(env)
    assert distribute.is_chief(env)


def test_a_chief_task_counts_towards_the_group_and_is_the_only_chief():
    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    chief = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})}
    worker0 = {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    }
    assert distribute.group_size(distribute.tf_config_from_env(chief)) == 3
    assert distribute.is_multi_worker(worker0)
    assert distribute.is_chief(chief)
    assert not distribute.is_chief(worker0)


@pytest.mark.parametrize(
    ("index", "shown"),
    [
        pytest.param(None, "None", id="missing"),
        pytest.param("", "''", id="empty"),
        pytest.param("-1", "'-1'", id="negative"),
        pytest.param("one", "'one'", id="not-a-number"),
        pytest.param("3", "'3'", id="past-the-last-host"),
        pytest.param("1.0", "'1.0'", id="not-an-integer"),
    ],
)
def test_bad_job_completion_index(index, shown):
    env = {distribute.WORKER_HOSTS_ENV: HOSTS}
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = index
    expected = rf"JOB_COMPLETION_INDEX {shown}: expected an integer from 0 to 2"
    with pytest.raises(DistributeError, match=expected):
        distribute.tf_config_from_env(env)


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        pytest.param("{not json", "invalid TF_CONFIG", id="not-json"),
        pytest.param("[]", "invalid TF_CONFIG", id="a-list"),
        pytest.param("{}", "invalid TF_CONFIG", id="empty-object"),
        pytest.param('{"cluster": {"worker": ["a:1"]}}', "invalid TF_CONFIG", id="no-task"),
        pytest.param(
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}',
            "invalid TF_CONFIG",
            id="no-index",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1"]}, "task": "worker"}', "invalid TF_CONFIG", id="task-str"
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            r"task index 2 is not a worker index: expected 0\.\.1",
            id="index-past-the-end",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": -1}}',
            r"task index -1 is not a worker index",
            id="negative-index",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}',
            r"task index '1' is not a worker index",
            id="string-index",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": true}}',
            r"task index True is not a worker index",
            id="bool-index",
        ),
        pytest.param(
            '{"cluster": {"worker": "a:1,b:2"}, "task": {"type": "worker", "index": 0}}',
            r"cluster 'worker': 'a:1,b:2': expected a list of host:port",
            id="hosts-as-one-string",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
            "invalid TF_CONFIG",
            id="type-not-in-cluster",
        ),
        pytest.param(
            '{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}',
            "must be among chief, worker",
            id="parameter-server",
        ),
    ],
)
def test_malformed_tf_config(tf_config, message):
    with pytest.raises(DistributeError, match=message):
        distribute.tf_config_from_env({"TF_CONFIG": tf_config})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="unset"),
        pytest.param("", None, id="empty"),
        pytest.param("30", 30.0, id="integer"),
        pytest.param(" 2.5 ", 2.5, id="fraction"),
    ],
)
def test_collective_timeout_from_env(raw, expected):
    env = {} if raw is None else {distribute.COLLECTIVE_TIMEOUT_ENV: raw}
    assert distribute.collective_timeout_from_env(env) == expected


@pytest.mark.parametrize("raw", ["0", "-5", "soon", "nan", "inf"])
def test_bad_collective_timeout(raw):
    with pytest.raises(DistributeError, match=rf"IMDB_TRAIN_COLLECTIVE_TIMEOUT '{raw}'"):
        distribute.collective_timeout_from_env({distribute.COLLECTIVE_TIMEOUT_ENV: raw})


def test_peer_failure_names_the_reason_and_ignores_other_errors():
    tf = pytest.importorskip("tensorflow")
    message = (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at "
        '(most recent call last):\n  File "train.py", line 1, in fit\n'
        "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker}} "
        "Collective has timed out during execution.\n"
        "The error could be from a previous operation. Restart your program to reset."
    )
    reason = distribute.peer_failure(tf.errors.DeadlineExceededError(None, None, message))
    assert reason == "DeadlineExceededError: Collective has timed out during execution."
    lost = distribute.peer_failure(tf.errors.UnavailableError(None, None, "peer is down"))
    assert lost == "UnavailableError: peer is down"
    assert distribute.peer_failure(tf.errors.InvalidArgumentError(None, None, "shape")) is None
    assert distribute.peer_failure(RuntimeError("no")) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, float(contract.PEER_TIMEOUT_DEFAULT), id="unset"),
        pytest.param("", float(contract.PEER_TIMEOUT_DEFAULT), id="empty"),
        pytest.param("30", 30.0, id="integer"),
    ],
)
def test_peer_timeout_from_env(raw, expected):
    env = {} if raw is None else {contract.PEER_TIMEOUT_ENV: raw}
    assert distribute.peer_timeout_from_env(env) == expected


@pytest.mark.parametrize("raw", ["0", "-5", "soon", "inf"])
def test_bad_peer_timeout(raw):
    with pytest.raises(DistributeError, match=rf"IMDB_TRAIN_PEER_TIMEOUT '{raw}'"):
        distribute.peer_timeout_from_env({contract.PEER_TIMEOUT_ENV: raw})


def test_peers_are_the_other_members_of_the_group():
    config = {"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.peers(config) == ["a:1", "c:3"]


def _group(ports: list[int], index: int) -> dict:
    return {
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    }


def _meet_in_thread(config: dict, seconds: float, results: dict, key) -> threading.Thread:
    def run():
        results[key] = distribute.wait_for_peers(config, seconds, interval=0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_group_meets_and_frees_its_ports():
    ports = free_ports(3)
    results: dict = {}
    threads = [_meet_in_thread(_group(ports, i), 30, results, i) for i in range(3)]
    for t in threads:
        t.join(40)
    assert results == {0: [], 1: [], 2: []}
    for port in ports:  # free for TensorFlow's server at once (no SO_REUSEADDR here)
        with socket.socket(socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET) as s:
            s.bind(("", port))


def test_a_port_that_does_not_greet_is_not_a_peer():
    """What answers TCP on a peer's port without greeting (an earlier group's TensorFlow
    server that has not exited yet) is not the peer: it is named missing after the wait."""
    stale = socket.create_server(("127.0.0.1", 0))
    (own,) = free_ports(1)
    where = f"127.0.0.1:{stale.getsockname()[1]}"
    config = {"cluster": {"worker": [f"127.0.0.1:{own}", where]},
              "task": {"type": "worker", "index": 0}}  # fmt: skip
    try:
        started = time.monotonic()
        missing = distribute.wait_for_peers(config, seconds=1.0, interval=0.1)
    finally:
        stale.close()
    assert missing == [where]
    assert time.monotonic() - started >= 1.0
    assert f"not meeting on their port: {where}" in distribute.group_not_formed(missing, 1.0)


def test_a_peer_is_met_on_a_port_a_stale_server_held_before():
    """Worker 1's port first holds something that accepts but never greets (an earlier
    group's server); then worker 1 starts its meeting there. Worker 0 must not have counted
    the stale server as worker 1, or it would leave without ever greeting the real one,
    and worker 1 would wait in vain."""
    ports = free_ports(2)
    stale = socket.create_server(("127.0.0.1", ports[1]))
    stale.settimeout(0.1)
    running = [True]

    def grpc_like():  # an HTTP/2 server answers any bytes with a SETTINGS frame, then closes
        while running[0]:
            with contextlib.suppress(OSError):
                conn, _ = stale.accept()
                with conn:
                    conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        stale.close()

    server = threading.Thread(target=grpc_like)
    server.start()
    results: dict = {}
    first = _meet_in_thread(_group(ports, 0), 20, results, 0)
    time.sleep(1.0)  # worker 0 has tried the stale server by now
    running[0] = False
    server.join()
    second = _meet_in_thread(_group(ports, 1), 20, results, 1)
    first.join(30)
    second.join(30)
    assert results == {0: [], 1: []}


def test_a_signal_ends_the_wait_only_while_no_peer_counts_on_us():
    ports = free_ports(3)  # worker 2 never comes
    started = time.monotonic()
    alone = distribute.wait_for_peers(_group(ports, 0), 30, stopped=lambda: True, interval=0.05)
    assert len(alone) == 2 and time.monotonic() - started < 10

    # Worker 1 greets worker 0 at once; worker 0 is signalled a second later and stays,
    # since worker 1 may already count on it, until its own timeout.
    results: dict = {}
    thread = _meet_in_thread(_group(ports, 1), 3, results, 1)
    started = time.monotonic()
    missing = distribute.wait_for_peers(
        _group(ports, 0), 3, stopped=lambda: time.monotonic() > started + 1, interval=0.05
    )
    thread.join(10)
    assert time.monotonic() - started >= 3
    assert missing == [f"127.0.0.1:{ports[2]}"] and results[1] == [f"127.0.0.1:{ports[2]}"]


@pytest.mark.parametrize("hosts", ["a:1,b", "a:1,b:x", "a:1,:2"])
def test_worker_hosts_need_a_port(hosts):
    env = {contract.WORKER_HOSTS_ENV: hosts, contract.COMPLETION_INDEX_ENV: "0"}
    with pytest.raises(DistributeError, match="expected host:port"):
        distribute.tf_config_from_env(env)


# --- a GPU pod refuses to train on fewer GPUs than it asked for ------------------------------
_CPU_BUILD = {"gpus": [], "cuda_build": False, "cuda_version": None, "cudnn_version": None,
              "driver_version": None}  # fmt: skip
_CUDA_BUILD = {"gpus": [], "cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9",
               "driver_version": None}  # fmt: skip


@pytest.mark.parametrize(
    "found, error, code",
    [
        pytest.param({**_CPU_BUILD, "gpus_requested": 1}, distribute.GpuImageError,
                     contract.EXIT_BAD_INPUT, id="cpu-image"),
        pytest.param({**_CUDA_BUILD, "gpus_requested": 1}, distribute.GpuMissingError,
                     contract.EXIT_NO_GPU, id="node-without-gpu"),
        pytest.param({**_CUDA_BUILD, "gpus_requested": 2, "gpus": ["NVIDIA L4"],
                      "driver_version": "550.90.07"}, distribute.GpuMissingError,
                     contract.EXIT_NO_GPU, id="fewer-than-asked"),
    ],
)  # fmt: skip
def test_fewer_gpus_than_the_pod_asked_for_is_refused_with_what_was_found(found, error, code):
    from trainer.commandline import outcome

    with pytest.raises(error) as e:
        distribute.check_gpus(found)
    line = str(e.value)
    assert f"asked for {found['gpus_requested']} GPU" in line
    assert f"sees {len(found['gpus'])}" in line
    assert f"driver {found['driver_version'] or 'none'}" in line
    if found["cuda_build"]:
        assert f"CUDA {found['cuda_version']}, cuDNN {found['cudnn_version']}" in line
    else:
        assert "without CUDA" in line
    assert outcome(e.value, resumable=True)[0] == code


@pytest.mark.parametrize("asked, gpus", [(0, []), (1, ["NVIDIA L4"]), (1, ["a", "b"])])
def test_enough_gpus_pass(asked, gpus):
    distribute.check_gpus({**_CUDA_BUILD, "gpus_requested": asked, "gpus": gpus})


@pytest.mark.parametrize("raw", ["one", "-1", "1.5"])
def test_bad_gpu_count(raw):
    with pytest.raises(DistributeError, match=contract.GPUS_ENV):
        distribute.gpus_requested({contract.GPUS_ENV: raw})


def test_a_cpu_pod_that_asked_for_a_gpu_stops_before_training(monkeypatch):
    """On this CPU machine: asked for 1, TensorFlow (a CPU build) sees 0 -> refused, where
    make_strategy used to fall back to the CPU without a word."""
    monkeypatch.setenv(contract.GPUS_ENV, "1")
    with pytest.raises(distribute.GpuImageError, match="asked for 1 GPU.*sees 0"):
        distribute.make_strategy()
    monkeypatch.setenv(contract.GPUS_ENV, "0")
    assert distribute.make_strategy().num_replicas_in_sync == 1


def test_devices_report_what_tensorflow_says():
    import tensorflow as tf

    found = distribute.devices()
    build = tf.sysconfig.get_build_info()
    assert found["gpus"] == [] and found["cpus"] >= 1  # no GPU on this machine
    assert found["cuda_build"] == bool(build.get("is_cuda_build"))
    assert found["cuda_version"] == build.get("cuda_version")
    assert found["driver_version"] is None  # no NVIDIA driver here
