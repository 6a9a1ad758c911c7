"""jobs.submit / status / logs / cancel through the real kubernetes client against a fake API."""

from __future__ import annotations

import pytest

from jobs import cancel, logs, status, submit
from tests.fakes.kube_api import FakeKube, Script


@pytest.fixture(autouse=True)
def image_and_output(monkeypatch):
    """jobs.submit's required image and bucket, given the way a user's shell would."""
    from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT
    from trainer.contract import IMAGE_ENV, OUTPUT_ENV

    monkeypatch.setenv(IMAGE_ENV, EXAMPLE_IMAGE)
    monkeypatch.setenv(OUTPUT_ENV, EXAMPLE_OUTPUT)


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
    kube.wait_for(lambda k: k.pods_of("imdb-train-mean-s1")[0]["status"]["phase"] == "Running")
    capsys.readouterr()
    assert run(status.main, "--run-id", "s1") == 0
    lines = capsys.readouterr().out.split("\n\n")[0].splitlines()
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
    # Progress lines ("job X: pod ... Running") may come first; the error is one last line.
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith(message) and err.rstrip().endswith(error)
    assert "Traceback" not in err


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


def test_a_broken_worker_group_is_retried_by_the_cluster(kube, capsys):
    """Worker 1 fails once (exit 75), its peer stops with it: the Job controller replaces
    both pods within the Job's budget and the new group completes, no client retry."""
    kube.scripts["imdb-train-lstm-g2"] = Script(
        outcome="fail", exit_code=75, fail_index=1, fail_times=1, group=True
    )
    argv = ["--run-id", "g2", "--workers", "2", "--gpus", "2", "--wait"]
    assert run(submit.main, *argv) == 0, capsys.readouterr().err
    assert "job.batch/imdb-train-lstm-g2 succeeded" in capsys.readouterr().out
    job = kube.objects[("jobs", "default", "imdb-train-lstm-g2")]
    assert job["spec"]["backoffLimit"] == 2 * 3  # 3 rounds of a 2-worker group
    assert job["status"]["failed"] == 2 and job["status"]["succeeded"] == 2
    assert len(kube.requests_to("POST", r"/jobs$")) == 1  # the cluster retried, not submit
    assert len(kube.pods_of("imdb-train-lstm-g2")) == 4  # every worker was replaced


@pytest.mark.parametrize("reason", ["PodFailurePolicy", "DeadlineExceeded"])
def test_permanent_failures_are_not_retried(kube, capsys, reason):
    kube.scripts["imdb-train-lstm-p1"] = Script(outcome="fail", reason=reason)
    assert run(submit.main, "--run-id", "p1", "--wait", "--retries", "3") == 1
    assert f"failed: {reason}" in capsys.readouterr().err
    assert len(kube.requests_to("POST", r"/jobs$")) == 1


def status_sections(out):
    table, *details = out.split("\n\n")
    return table.splitlines(), {d.splitlines()[0].rstrip(":"): d for d in details}


def test_status_shows_why_a_job_is_not_running(kube, capsys):
    kube.scripts["imdb-train-lstm-i1"] = Script(start="ImagePullBackOff")
    run(submit.main, "--run-id", "i1")
    kube.wait_for(lambda k: k.objects[("pods", "default", k.pods_of("imdb-train-lstm-i1")[0][
        "metadata"]["name"])]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        == "ImagePullBackOff")  # fmt: skip
    capsys.readouterr()
    assert run(status.main) == 0
    table, details = status_sections(capsys.readouterr().out)
    assert "Pending (ImagePullBackOff)" in table[1]
    detail = details["imdb-train-lstm-i1"]
    assert " Pending (ImagePullBackOff: Back-off pulling image " in detail
    assert "Warning Failed pod/imdb-train-lstm-i1-" in detail
    assert 'Failed to pull image "imdb-train:0.1.0"' in detail


def test_status_shows_a_missing_service_account(kube, capsys):
    run(submit.main, "--run-id", "n1", "--service-account", "nobody")
    capsys.readouterr()
    assert run(status.main) == 0
    _, details = status_sections(capsys.readouterr().out)
    assert (
        "Warning FailedCreate job/imdb-train-lstm-n1: Error creating: pods "
        in details["imdb-train-lstm-n1"]
    )
    assert 'serviceaccount "nobody" not found' in details["imdb-train-lstm-n1"]


def test_wait_prints_progress(kube, capsys):
    kube.default_script = Script(start_delay=1.0, delay=0.5)
    assert run(submit.main, "--run-id", "w2", "--wait") == 0
    err = capsys.readouterr().err
    assert "job imdb-train-lstm-w2: imdb-train-lstm-w2-" in err
    assert " Pending (ContainerCreating)" in err


def test_follow_follows_every_pod_while_the_job_is_active(kube, capsys):
    kube.default_script = Script(outcome="fail", log=["starting"], delay=0.2)
    argv = ["--run-id", "f2", "--follow", "--backoff-limit", "1"]
    assert run(submit.main, *argv) == 0
    assert capsys.readouterr().out.count("starting\n") == 2  # the first pod and its retry
    assert len(kube.requests_to("GET", r"/log$")) == 2


def test_multi_worker_job_starts_only_after_its_service(kube):
    kube.default_script = Script(outcome="hang")
    assert run(submit.main, "--run-id", "m2", "--workers", "2", "--gpus", "2") == 0
    writes = [(m, p.rsplit("/", 1)[-1], b) for m, p, _, b in kube.requests if m != "GET"]
    assert [(m, p) for m, p, _ in writes] == [
        ("POST", "jobs"), ("POST", "services"), ("PATCH", "imdb-train-lstm-m2")]  # fmt: skip
    assert writes[0][2]["spec"]["suspend"] is True and writes[2][2] == {"spec": {"suspend": False}}
    pods = kube.wait_for(lambda k: len(k.pods_of("imdb-train-lstm-m2")) == 2 and k.pods_of(
        "imdb-train-lstm-m2"))  # fmt: skip
    svc_rv = int(kube.objects[("services", "default", "imdb-train-lstm-m2")]["metadata"][
        "resourceVersion"])  # fmt: skip
    first_pod = min(rv for rv, t, r, o in kube.events if r == "pods" and t == "ADDED")
    assert first_pod > svc_rv and len(pods) == 2


def test_multi_worker_job_is_deleted_when_its_service_fails(kube, capsys):
    kube.forbidden.add(("create", "services"))
    assert run(submit.main, "--run-id", "m3", "--workers", "2", "--gpus", "2") == 1
    err = capsys.readouterr().err
    assert "cannot create service imdb-train-lstm-m3" in err
    assert "deleted job imdb-train-lstm-m3 again" in err
    assert kube.requests_to("DELETE", r"/jobs/imdb-train-lstm-m3$")
    kube.wait_for(lambda k: ("jobs", "default", "imdb-train-lstm-m3") not in k.objects)
    assert not kube.pods_of("imdb-train-lstm-m3")  # it never started a worker


def test_multi_worker_follow_and_logs_pick_worker_0(kube, capsys):
    kube.default_script = Script(log=["chief line"], delay=0.3)
    argv = ["--run-id", "m4", "--workers", "2", "--gpus", "2", "--follow"]
    assert run(submit.main, *argv) == 0
    ((_, path, _, _),) = kube.requests_to("GET", r"/log$")
    pod = path.split("/")[-2]
    annotations = kube.objects[("pods", "default", pod)]["metadata"]["annotations"]
    assert annotations["batch.kubernetes.io/job-completion-index"] == "0"
    assert run(logs.main, "imdb-train-lstm-m4") == 0
    assert kube.requests_to("GET", r"/log$")[-1][1].split("/")[-2] == pod


def test_logs_of_a_pod_that_has_not_started_say_why(kube, capsys):
    kube.scripts["imdb-train-lstm-p2"] = Script(start="Unschedulable")
    run(submit.main, "--run-id", "p2")
    kube.wait_for(lambda k: k.pods_of("imdb-train-lstm-p2")[0]["status"].get("conditions"))
    capsys.readouterr()
    assert run(logs.main, "imdb-train-lstm-p2") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: pod imdb-train-lstm-p2-")
    assert "has not started: Unschedulable: 0/3 nodes are available" in err
    assert err.endswith("pass --follow to wait for it")


def test_cancel_by_model_alone(kube, capsys):
    kube.default_script = Script(outcome="hang")
    for rid in ("a", "b"):
        run(submit.main, "--model", "all", "--run-id", rid)
    assert run(cancel.main, "--model", "mean") == 0
    deleted = sorted(p.rsplit("/", 1)[-1] for _, p, _, _ in kube.requests_to("DELETE", "/jobs/"))
    assert deleted == ["imdb-train-mean-a", "imdb-train-mean-b"]
    assert ("jobs", "default", "imdb-train-lstm-a") in kube.objects  # other models stay
    capsys.readouterr()
    assert run(cancel.main, "--model", "mean") == 1
    assert capsys.readouterr().err.strip() == "error: no job with model mean in namespace default"


def test_commands_use_the_kubeconfig_context_namespace(kube, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "ml", namespace="ml")))
    kube.add("serviceaccounts", "ml", {"metadata": {"name": "imdb-train"}})
    kube.default_script = Script(outcome="hang")
    run(submit.main, "--run-id", "x1", "--namespace", "ml")
    capsys.readouterr()
    assert run(status.main) == 0
    assert "imdb-train-lstm-x1" in capsys.readouterr().out
    assert run(cancel.main, "--run-id", "x1") == 0
    assert kube.requests_to("DELETE", r"/namespaces/ml/jobs/imdb-train-lstm-x1$")


def test_bad_retries_are_refused_before_anything_is_created(kube, capsys):
    assert run(submit.main, "--run-id", "r9", "--wait", "--retries", "-1") == 2
    assert "retries" in capsys.readouterr().err
    assert not kube.requests_to("POST", r".")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_queued_jobs_stay_suspended_for_kueue(kube, workers):
    argv = ["--run-id", f"q{workers}", "--queue", "team-a", "--workers", workers, "--gpus", "2"]
    assert run(submit.main, *argv) == 0
    job = kube.objects[("jobs", "default", f"imdb-train-lstm-q{workers}")]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    assert not kube.requests_to("PATCH", r"/jobs/")  # admission is Kueue's, not ours
    assert not kube.pods_of(f"imdb-train-lstm-q{workers}")


def test_bad_queue_is_refused_before_anything_is_created(kube, capsys):
    assert run(submit.main, "--run-id", "q3", "--queue", "Team_A") == 2
    assert "invalid queue 'Team_A'" in capsys.readouterr().err
    assert not kube.requests_to("POST", r".")
