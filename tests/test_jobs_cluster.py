"""jobs.submit / status / logs / cancel through the real kubernetes client against a fake API."""

from __future__ import annotations

import pytest
from fakes.kube_api import FakeKube, Script

from jobs import cancel, logs, status, submit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    fake = FakeKube().start()
    fake.add("serviceaccounts", "default", {"metadata": {"name": "imdb-train"}})
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield fake
    fake.stop()


def run(main, *argv):
    return main(list(argv))


def test_submit_creates_the_built_job(kube, capsys):
    assert run(submit.main, "--model", "lstm", "--run-id", "r1", "--output", "gs://b-1/imdb") == 0
    ((_, path, _, body),) = kube.requests_to("POST", r"/jobs$")
    assert path == "/apis/batch/v1/namespaces/default/jobs"
    assert body["metadata"]["name"] == "imdb-train-lstm-r1"
    args = body["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--output") + 1] == "gs://b-1/imdb"
    assert "job.batch/imdb-train-lstm-r1 created" in capsys.readouterr().out


def test_second_submit_with_same_run_id_is_a_409_with_advice(kube, capsys):
    assert run(submit.main, "--run-id", "r1") == 0
    assert run(submit.main, "--run-id", "r1") == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: job imdb-train-lstm-r1 already exists in namespace default; "
        "pass --run-id to start another run"
    )


@pytest.mark.parametrize(
    ("outcome", "code", "expected"),
    [
        pytest.param("succeed", 0, "job.batch/imdb-train-lstm-w1 succeeded", id="success"),
        pytest.param(
            "fail", 1, "job.batch/imdb-train-lstm-w1 failed: PodFailurePolicy: exit 2", id="failure"
        ),
    ],
)
def test_wait_reports_the_outcome(kube, capsys, outcome, code, expected):
    kube.scripts["imdb-train-lstm-w1"] = Script(
        outcome=outcome, delay=0.5, reason="PodFailurePolicy", message="exit 2"
    )
    assert run(submit.main, "--run-id", "w1", "--wait", "--timeout", "20") == code
    out = capsys.readouterr()
    assert expected in (out.out + out.err)
    # The outcome arrived through a watch, not by polling.
    assert kube.requests_to("GET", r"/jobs$")[-1][2]["watch"] == ["true"]


def test_wait_all_models_fails_if_one_fails(kube, capsys):
    kube.scripts["imdb-train-mean-a1"] = Script(outcome="fail")
    assert run(submit.main, "--model", "all", "--run-id", "a1", "--wait") == 1
    out = capsys.readouterr()
    assert "job.batch/imdb-train-lstm-a1 succeeded" in out.out
    assert "imdb-train-mean-a1 failed: BackoffLimitExceeded" in out.err
    assert "error: 1 of 2 jobs failed" in out.err


def test_wait_times_out_with_a_clear_message(kube, capsys):
    kube.scripts["imdb-train-lstm-t1"] = Script(outcome="hang")
    assert run(submit.main, "--run-id", "t1", "--wait", "--timeout", "1") == 1
    assert "timed out after 1s waiting for job imdb-train-lstm-t1" in capsys.readouterr().err


def test_follow_streams_the_trainer_log(kube, capsys):
    kube.default_script = Script(log=["epoch 1/2 loss=0.6", "epoch 2/2 loss=0.4"])
    assert run(submit.main, "--run-id", "f1", "--follow", "--wait") == 0
    out = capsys.readouterr().out
    assert "epoch 1/2 loss=0.6\nepoch 2/2 loss=0.4\n" in out
    ((_, path, query, _),) = kube.requests_to("GET", r"/log$")
    assert query["container"] == ["trainer"] and query["follow"] == ["true"]


def test_multi_worker_submit_creates_a_service_owned_by_the_job(kube):
    assert run(submit.main, "--run-id", "m1", "--workers", "2", "--gpus", "2") == 0
    job = kube.objects[("jobs", "default", "imdb-train-lstm-m1")]
    svc = kube.objects[("services", "default", "imdb-train-lstm-m1")]
    assert job["spec"]["completionMode"] == "Indexed"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    # Cancelling the Job garbage-collects the Service with it (asynchronously, as in a cluster).
    assert run(cancel.main, "imdb-train-lstm-m1") == 0
    kube.wait_for(lambda k: ("services", "default", "imdb-train-lstm-m1") not in k.objects)


def test_cancel_deletes_job_and_pods_in_background(kube, capsys):
    run(submit.main, "--run-id", "c1")
    assert any(k[0] == "pods" for k in kube.objects)
    assert run(cancel.main, "--run-id", "c1") == 0
    ((_, path, query, body),) = kube.requests_to("DELETE", r"/jobs/")
    assert path.endswith("/jobs/imdb-train-lstm-c1")
    assert "Background" in (
        query.get("propagationPolicy", []) + [(body or {}).get("propagationPolicy")]
    )
    kube.wait_for(lambda k: not any(key[0] in ("jobs", "pods") for key in k.objects))
    assert "job.batch/imdb-train-lstm-c1 deleted" in capsys.readouterr().out


def test_cancel_unknown_job_names_it(kube, capsys):
    assert run(cancel.main, "nope") == 1
    assert capsys.readouterr().err.strip() == "error: job nope not found in namespace default"


def test_status_lists_jobs_with_state(kube, capsys):
    kube.scripts["imdb-train-mean-s1"] = Script(outcome="hang")
    run(submit.main, "--model", "lstm", "--run-id", "s1", "--wait")
    run(submit.main, "--model", "mean", "--run-id", "s1")
    capsys.readouterr()
    assert run(status.main, "--run-id", "s1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "MODEL", "RUN-ID", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["imdb-train-lstm-s1"][1:4] == ["lstm", "s1", "Complete"]
    assert rows["imdb-train-mean-s1"][1:4] == ["mean", "s1", "Running"]


def test_logs_by_model_and_run_id(kube, capsys):
    kube.default_script = Script(log=["hello from the trainer"])
    run(submit.main, "--run-id", "l1")
    kube.wait_for(lambda k: k.pods_of("imdb-train-lstm-l1")[0]["status"]["phase"] == "Succeeded")
    capsys.readouterr()
    assert run(logs.main, "--model", "lstm", "--run-id", "l1") == 0
    assert capsys.readouterr().out == "hello from the trainer\n"


@pytest.mark.parametrize(
    ("forbid", "argv", "message"),
    [
        pytest.param(
            ("create", "jobs"),
            ["--run-id", "x1"],
            "error: forbidden: cannot create job imdb-train-lstm-x1 in namespace default: your "
            "account needs the RBAC verb 'create' on resource 'jobs' (API group 'batch')",
            id="create-jobs",
        ),
        pytest.param(
            ("watch", "jobs"),
            ["--run-id", "x2", "--wait"],
            "error: forbidden: cannot watch job imdb-train-lstm-x2 in namespace default: your "
            "account needs the RBAC verb 'watch' on resource 'jobs' (API group 'batch')",
            id="watch-jobs",
        ),
        pytest.param(
            ("get", "pods/log"),
            ["--run-id", "x3", "--follow"],
            "error: forbidden: cannot get pods/log",
            id="get-pods-log",
        ),
    ],
)
def test_forbidden_names_the_missing_rbac_rule(kube, capsys, forbid, argv, message):
    kube.forbidden.add(forbid)
    assert run(submit.main, *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_namespace(kube, capsys):
    assert run(submit.main, "--namespace", "nope", "--run-id", "n1") == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: namespace nope does not exist; create it or pass --namespace"


def test_no_kubeconfig_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert run(status.main) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no usable Kubernetes configuration in ")
    assert len(err.strip().splitlines()) == 1


def test_unreachable_api_server(tmp_path, monkeypatch, capsys):
    fake = FakeKube()
    fake.url = "http://127.0.0.1:9"  # discard port: nothing listens
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kc")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert run(status.main) == 1
    assert "the API server is unreachable" in capsys.readouterr().err


def test_failed_multi_worker_job_is_rerun_as_a_whole(kube, capsys):
    kube.scripts["imdb-train-lstm-g1"] = [Script(outcome="fail"), Script(outcome="succeed")]
    argv = ["--run-id", "g1", "--workers", "2", "--gpus", "2", "--wait", "--retries", "1"]
    assert run(submit.main, *argv) == 0
    out = capsys.readouterr()
    assert "re-running it as a whole, retry 1 of 1" in out.err
    assert "job.batch/imdb-train-lstm-g1 succeeded" in out.out
    (delete,) = kube.requests_to("DELETE", r"/jobs/imdb-train-lstm-g1$")
    assert "Foreground" in delete[2].get("propagationPolicy", []) + [
        (delete[3] or {}).get("propagationPolicy")
    ]
    assert len(kube.requests_to("POST", r"/jobs$")) == 2
    assert len(kube.requests_to("POST", r"/services$")) == 2  # the Service went with the Job


@pytest.mark.parametrize("reason", ["PodFailurePolicy", "DeadlineExceeded"])
def test_permanent_failures_are_not_retried(kube, capsys, reason):
    kube.scripts["imdb-train-lstm-p1"] = Script(outcome="fail", reason=reason)
    assert run(submit.main, "--run-id", "p1", "--wait", "--retries", "3") == 1
    assert f"failed: {reason}" in capsys.readouterr().err
    assert len(kube.requests_to("POST", r"/jobs$")) == 1
