"""JobSpec validation and the pure builders: schema-valid, restricted, the trainer contract."""

from __future__ import annotations

import pytest

from jobs.chart_objects import build_cronjob, build_role, build_role_binding, build_service_account
from jobs.manifest import build_job, build_service, to_dict
from jobs.objects import build_objects
from jobs.spec import EXAMPLE_IMAGE, EXAMPLE_OUTPUT, JobSpec, SpecError, resolve_models
from tests.fakes.k8s_checks import ROOT, restricted_violations, validate

ACC = "cloud.google.com/gke-accelerator"


def spec_of(**fields) -> JobSpec:
    """A JobSpec with the example image, bucket and GPU type unless the test names its own."""
    example = {"image": EXAMPLE_IMAGE, "output": EXAMPLE_OUTPUT, "accelerator": "nvidia-l4"}
    return JobSpec(**{**example, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "foo"}, "invalid model 'foo': expected one of mean, lstm"),
        ({"run_id": "Bad_ID"}, "invalid run id 'Bad_ID': expected 1-63 lower-case letters"),
        ({"run_id": "r1\n"}, "invalid run id 'r1\\n'"),
        ({"extra_args": ["--model", "mean"]}, "--model is set by jobs.submit itself"),
        ({"extra_args": ["--epoch", "1"]}, "unknown flag --epoch"),
        ({"extra_args": ["--promote", "maybe"]}, "invalid --promote 'maybe'"),
        ({"node_selector": "{bad"}, "invalid --node-selector '{bad': not JSON"),
        ({"run_id": True}, "invalid run id True"),
        ({"run_id": "x" * 60}, "is longer than 63 characters; pass a shorter --run-id"),
        ({"gpus": -1}, "invalid gpus -1: expected an integer >= 0"),
        ({"epochs": 0}, "invalid epochs 0: expected an integer >= 1"),
        ({"epochs": "ten"}, "invalid epochs 'ten': expected an integer >= 1"),
        ({"batch_size": 63, "gpus": 2}, "invalid batch size 63: the global batch must divide"),
        ({"workers": 0}, "invalid workers 0: expected an integer >= 1"),
        ({"namespace": "Prod"}, "invalid namespace 'Prod': expected a DNS label"),
        ({"output": "s3://b/x"}, "invalid output 's3://b/x': expected gs://bucket/prefix"),
        ({"output": "runs"}, "invalid output 'runs': expected gs://bucket/prefix"),
        ({"output": "gs://B/x"}, "invalid output 'gs://B/x': invalid bucket name 'B'"),
        ({"memory_limit": "16GB"}, "invalid memory limit '16GB': expected a Kubernetes quantity"),
        ({"node_selector": "gpu"}, "invalid node selector 'gpu': expected key=value"),
        ({"tolerations": [{"keys": "x"}]}, "invalid toleration key 'keys': expected one of"),
        ({"image": "bad image"}, "invalid image 'bad image'"),
        ({"image_pull_policy": "Sometimes"}, "invalid image pull policy 'Sometimes'"),
    ],
)
def test_spec_rejects_bad_values_naming_them(fields, message):
    fields = {"model": "lstm", "run_id": "r1", **fields}
    with pytest.raises(SpecError) as info:
        spec_of(**fields)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"run_id": 123}, "run_id", "123"),  # fire reads --run-id 123 as an int
        ({"epochs": "7"}, "epochs", 7),
        ({"batch_size": 128.0}, "batch_size", 128),
        ({"cpu": 2}, "cpu", "2"),
        ({"node_selector": "a=b,c=d", "gpus": 0}, "node_selector", {"a": "b", "c": "d"}),
        ({"node_selector": '{"a": "b"}', "gpus": 0}, "node_selector", {"a": "b"}),
        ({"node_selector": "a=b"}, "node_selector", {"a": "b", ACC: "nvidia-l4"}),
        ({"gpus": 0}, "node_selector", {}),
        ({"gpus": 0}, "tolerations", []),
        ({"extra_args": "--promote --k 1"}, "extra_args", ("--promote", "--k", "1")),
    ],
)
def test_spec_coerces_what_fire_parses(fields, attr, expected):
    assert getattr(spec_of(model="lstm", **{"run_id": "r1", **fields}), attr) == expected


def test_default_run_ids_are_unique_and_valid():
    ids = {spec_of(model="mean").run_id for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [("all", ["mean", "lstm"]), ("lstm", ["lstm"]), (("mean", "lstm"), ["mean", "lstm"])],
)
def test_resolve_models(value, expected):
    assert resolve_models(value) == expected


def test_resolve_models_names_the_choices():
    with pytest.raises(SpecError, match=r"^invalid model 'cnn': expected one of mean, lstm, all$"):
        resolve_models("cnn")


SPECS = {
    "default": {},
    "cpu": {"gpus": 0},
    "multi-worker": {"workers": 3, "gpus": 2, "batch_size": 96},
    "custom": {"node_selector": "pool=a100", "ttl_seconds_after_finished": None,
               "extra_args": ["--promote"]},
}  # fmt: skip


def all_objects():
    for case, fields in SPECS.items():
        spec = spec_of(model="lstm", run_id="r1", **fields)
        for obj in build_objects(spec):
            yield pytest.param(obj, id=f"{case}-{obj.kind}")
    spec = spec_of(model="lstm", run_id="r1")
    yield pytest.param(build_cronjob(spec), id="cronjob")
    yield pytest.param(
        build_service_account(
            "sa",
            "ns",
            instance="i",
            component="trainer",
            gcp_service_account="t@p.iam.gserviceaccount.com",
        ),
        id="serviceaccount",
    )
    yield pytest.param(build_role("r", "ns", instance="i"), id="role")
    yield pytest.param(
        build_role_binding("r", "ns", instance="i", service_account="s"), id="rolebinding"
    )


@pytest.mark.parametrize("obj", list(all_objects()))
def test_every_built_object_is_schema_valid_and_restricted(obj):
    data = to_dict(obj)
    validate(data)
    assert restricted_violations(data) == []


def test_restricted_check_catches_violations():
    data = to_dict(build_job(spec_of(model="lstm", run_id="r1")))
    pod = data["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert restricted_violations(data) == [
        "volume host uses ['hostPath']",
        "trainer: allowPrivilegeEscalation is not false",
    ]


def test_schema_validation_catches_a_typo():
    data = to_dict(build_job(spec_of(model="lstm", run_id="r1")))
    data["spec"]["backofLimit"] = 3
    with pytest.raises(Exception, match="backofLimit"):
        validate(data)


def test_job_carries_the_trainer_contract():
    spec = spec_of(
        model="mean",
        run_id="20250101-000000-abcd",
        output="gs://bkt/imdb",
        epochs=3,
        batch_size=128,
        data="/data/aclImdb_v1.tar.gz",
    )
    job = to_dict(build_job(spec))
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert job["metadata"]["name"] == "imdb-train-mean-20250101-000000-abcd"
    assert c["args"] == [
        "--model", "mean", "--data", "/data/aclImdb_v1.tar.gz", "--output", "gs://bkt/imdb",
        "--run-id", "20250101-000000-abcd", "--epochs", "3", "--batch-size", "128",
    ]  # fmt: skip
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 60
    # The GPU type GKE schedules on (and Autopilot requires); no GPU Operator labels.
    assert pod["nodeSelector"] == {ACC: "nvidia-l4"} and pod["tolerations"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/cache", "/dev/shm"} <= mounts
    assert env["HOME"].startswith("/cache") and env["IMDB_TRAIN_CACHE"].startswith("/cache")
    assert env["MPLCONFIGDIR"].startswith("/tmp")
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "imdb-train"
    assert labels["imdb-train/run-id"] == spec.run_id


def test_pod_failure_policy_ignores_disruption_and_fails_on_bad_input():
    job = to_dict(build_job(spec_of(model="lstm", run_id="r1", backoff_limit=4)))["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [76]},
    }  # a peer stopped with a preempted worker: not counted either
    assert rules[2] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [78]},
    }  # a worker group that never formed trained nothing: not counted
    assert rules[3]["action"] == "FailJob"
    assert rules[3]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [2, 3],
    }  # bad input, a diverged loss
    assert rules[4] == {
        "action": "Count",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [77]},
    }  # a node without the GPUs asked for: retried, counted
    assert len(rules) == 5  # exit 75 (preempted/transient) has no rule: it counts normally
    assert job["backoffLimit"] == 4
    assert job["podReplacementPolicy"] == "Failed"


def test_indexed_job_for_multiple_workers():
    spec = spec_of(model="lstm", run_id="r1", workers=3, gpus=2, batch_size=96)
    job = to_dict(build_job(spec))
    svc = to_dict(build_service(spec))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    # The group is retried whole: one failure per worker per round, spec.backoff_limit rounds.
    assert job["spec"]["backoffLimit"] == 3 * spec.backoff_limit
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "imdb-train-lstm-r1"}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["IMDB_TRAIN_WORKER_HOSTS"] == ",".join(
        f"imdb-train-lstm-r1-{i}.imdb-train-lstm-r1:2222" for i in range(3)
    )
    assert float(env["IMDB_TRAIN_COLLECTIVE_TIMEOUT"]) > 0  # a stuck peer cannot hang the Job
    assert env["IMDB_TRAIN_PEER_TIMEOUT"] == str(spec.peer_timeout)  # nor a peer never started
    other = to_dict(build_job(spec_of(model="lstm", run_id="r2", workers=2, peer_timeout=60)))
    other_env = other["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "IMDB_TRAIN_PEER_TIMEOUT", "value": "60"} in other_env
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_cronjob_derives_the_run_id_from_its_job_name():
    cron = to_dict(
        build_cronjob(
            spec_of(model="lstm", run_id="r1", extra_args=["--promote"]),
            schedule="0 4 * * *",
            time_zone="Europe/Berlin",
        )
    )
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Europe/Berlin" and spec["schedule"] == "0 4 * * *"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    (c,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--run-id") + 1] == "$(IMDB_TRAIN_RUN_ID)"
    # user flags come last
    assert c["args"][-5:] == ["--tolerance", "0", "--seed", "-1", "--promote"]
    (run_env,) = [e for e in c["env"] if e["name"] == "IMDB_TRAIN_RUN_ID"]
    assert run_env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )


def test_cronjob_refuses_multi_worker():
    with pytest.raises(SpecError, match="invalid workers 2 for a CronJob"):
        build_cronjob(spec_of(model="lstm", run_id="r1", workers=2))


def test_service_account_for_workload_identity():
    sa = to_dict(
        build_service_account(
            "t",
            "ns",
            instance="i",
            component="trainer",
            gcp_service_account="t@p.iam.gserviceaccount.com",
        )
    )
    assert sa["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "t@p.iam.gserviceaccount.com"
    }
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"accelerator": ""}, "missing accelerator for --gpus 1: pass --accelerator TYPE or set"),
        ({"accelerator": "NVIDIA L4"}, "invalid accelerator 'NVIDIA L4': expected a GKE GPU"),
        ({"accelerator": "tpu-v5"}, "invalid accelerator 'tpu-v5': expected a GKE GPU"),
        ({"node_selector": f"{ACC}=nvidia-tesla-t4"}, f"{ACC}=nvidia-tesla-t4 contradicts"),
    ],
)
def test_a_gpu_job_names_a_valid_gpu_type(fields, message):
    """Autopilot refuses GPU pods without cloud.google.com/gke-accelerator; on Standard
    with several GPU pools a Job without it lands on whatever has room."""
    with pytest.raises(SpecError) as info:
        spec_of(model="lstm", run_id="r1", **fields)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert spec_of(model="lstm", run_id="r1", gpus=0, accelerator="").node_selector == {}


def test_the_charts_gpu_types_are_the_specs():
    import json
    import re

    from jobs.values import ACCELERATOR_RE, GKE_ACCELERATORS

    schema = json.loads((ROOT / "helm" / "imdb-train" / "values.schema.json").read_text())
    pattern = re.compile(schema["properties"]["accelerator"]["pattern"])
    for name in ("", *GKE_ACCELERATORS, "nvidia-gb300"):
        assert pattern.search(name), name
        assert not name or ACCELERATOR_RE.match(name), name
    for name in ("NVIDIA L4", "tpu-v5", "nvidia-", "nvidia-l4-"):
        assert not pattern.search(name) and not ACCELERATOR_RE.match(name), name


def test_an_unknown_gpu_type_is_a_warning_naming_the_known_ones(capsys):
    """nvidia-gb200 was refused while GKE had it: a name this version does not know is used
    as given, with one warning line, so a new GPU does not wait for a release."""
    for name in ("nvidia-gb200", "nvidia-l4"):
        spec = spec_of(model="lstm", run_id="r1", gpus=1, accelerator=name)
        assert spec.node_selector[ACC] == name
        assert capsys.readouterr().err == ""  # known ones say nothing
    spec = spec_of(model="lstm", run_id="r1", gpus=1, accelerator="nvidia-gb300")
    assert spec.node_selector[ACC] == "nvidia-gb300"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: accelerator 'nvidia-gb300' is not one this version knows")
    assert "nvidia-l4" in line and "nvidia-gb200" in line


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node_selector": "-bad=x"}, "invalid node selector key '-bad'"),
        ({"node_selector": "a/b/c=x"}, "invalid node selector key 'a/b/c'"),
        ({"node_selector": "Bad_Prefix/x=1"}, "invalid node selector key 'Bad_Prefix/x'"),
        ({"node_selector": "pool=has space"}, "invalid node selector value 'has space'"),
        ({"node_selector": "pool=" + "v" * 64}, "invalid node selector value"),
        ({"tolerations": '[{"key": "k", "operator": "Equals"}]'}, "operator 'Equals'"),
        ({"tolerations": '[{"key": "k", "operator": "Exists", "value": "v"}]'}, "takes no"),
        ({"tolerations": '[{"key": "k", "effect": "NoScheduling"}]'}, "effect 'NoScheduling'"),
        ({"tolerations": '[{"key": "bad key"}]'}, "invalid toleration key value 'bad key'"),
        ({"image": "Imdb-Train:1"}, "invalid image 'Imdb-Train:1'"),
        ({"image": "repo:@sha256:abc"}, "invalid image 'repo:@sha256:abc'"),
        ({"image": "reg/x::tag"}, "invalid image 'reg/x::tag'"),
        ({"image": "reg/x@sha256:short"}, "invalid image 'reg/x@sha256:short'"),
    ],
)
def test_kubernetes_fields_are_checked_before_anything_is_created(fields, message):
    """What the API server would refuse after other objects were created is bad input here,
    one line naming the value and what is valid."""
    with pytest.raises(SpecError) as info:
        spec_of(model="lstm", run_id="r1", **fields)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_valid_references_and_keys_pass():
    digest = "sha256:" + "a" * 64
    for image in ("imdb-train:0.1.0-cpu", f"europe-docker.pkg.dev/p/imdb/imdb-train@{digest}",
                  f"localhost:5000/a/b:t@{digest}"):  # fmt: skip
        assert spec_of(model="lstm", run_id="r1", image=image).image == image
    spec = spec_of(model="lstm", run_id="r1", node_selector="cloud.google.com/gke-spot=true",
                   tolerations='[{"key": "cloud.google.com/gke-spot", "operator": "Equal", '
                               '"value": "true", "effect": "NoSchedule"}]')  # fmt: skip
    assert spec.node_selector["cloud.google.com/gke-spot"] == "true"


def test_jobset_restarts_the_group_and_ignores_preemptions():
    """--runtime jobset: one JobSet whose child Job fails at once on any member's failure,
    saying why in its message; the JobSet restarts the group for free on a preemption (or a
    peer's exit 76), fails at once on bad input or the deadline, else counts the restart."""
    from jobs.objects import build_objects
    from trainer.contract import (
        EXIT_BAD_INPUT,
        EXIT_GROUP_NOT_FORMED,
        EXIT_GROUP_STOPPED,
        WORKER_HOSTS_ENV,
    )

    spec = spec_of(model="lstm", run_id="r1", workers=3, gpus=0, runtime="jobset", batch_size=63,
                   backoff_limit=2, queue="team-a")  # fmt: skip
    (js,) = build_objects(spec)
    assert js["kind"] == "JobSet" and js["spec"]["suspend"] is True
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    policy = js["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == 2 and policy["restartStrategy"] == "BlockingRecreate"
    rules = {r["name"]: r for r in policy["rules"]}
    assert rules["preempted"]["action"] == "RestartJobSetAndIgnoreMaxRestarts"
    assert rules["badInput"]["action"] == "FailJobSet"
    assert rules["deadline"]["action"] == "FailJobSet"
    # The Job controller's words (pkg/controller/job/pod_failure_policy.go).
    assert any("has condition DisruptionTarget" in p
               for p in rules["preempted"]["onJobFailureMessagePatterns"])  # fmt: skip
    assert any(f"exit code {EXIT_GROUP_STOPPED} matching" in p
               for p in rules["preempted"]["onJobFailureMessagePatterns"])  # fmt: skip
    assert any(f"exit code {EXIT_GROUP_NOT_FORMED} matching" in p
               for p in rules["preempted"]["onJobFailureMessagePatterns"])  # fmt: skip
    assert rules["badInput"]["onJobFailureMessagePatterns"] == [
        f"failed with exit code {code} matching FailJob rule" for code in (EXIT_BAD_INPUT, 3)
    ]
    (rjob,) = js["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    assert job["backoffLimit"] == 0 and job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 3
    assert "suspend" not in job and "ttlSecondsAfterFinished" not in job
    actions = [r["action"] for r in job["podFailurePolicy"]["rules"]]
    assert actions == ["FailJob", "FailJob", "FailJob", "FailJob"]
    (container,) = job["template"]["spec"]["containers"]
    hosts = next(e["value"] for e in container["env"] if e["name"] == WORKER_HOSTS_ENV)
    assert hosts.split(",") == [f"imdb-train-lstm-r1-worker-0-{i}.imdb-train-lstm-r1:2222"
                                for i in range(3)]  # fmt: skip


def test_jobset_names_must_leave_room_for_its_pods():
    with pytest.raises(SpecError, match="longer than"):
        spec_of(model="lstm", run_id="r" * 40, workers=2, gpus=0, runtime="jobset")
    with pytest.raises(SpecError, match="invalid runtime 'kubeflow'"):
        spec_of(model="lstm", run_id="r1", runtime="kubeflow")


@pytest.mark.parametrize("gpus, accelerator, spot", [(0, "", "false"), (2, "nvidia-l4", "true")])
def test_the_pod_tells_the_trainer_its_gpus_and_node(gpus, accelerator, spot):
    """The trainer refuses fewer GPUs than IMDB_TRAIN_GPUS and records the node's cost."""
    from trainer import contract

    selector = {"cloud.google.com/gke-spot": "true"} if spot == "true" else {}
    spec = spec_of(model="lstm", run_id="r1", gpus=gpus, accelerator=accelerator,
                   node_selector=selector)  # fmt: skip
    (container,) = to_dict(build_job(spec))["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[contract.GPUS_ENV]["value"] == str(gpus)
    assert container["resources"].get("limits", {}).get("nvidia.com/gpu", "0") == str(gpus)
    assert env[contract.NODE_NAME_ENV]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env[contract.NODE_ACCELERATOR_ENV]["value"] == accelerator
    assert env[contract.NODE_SPOT_ENV]["value"] == spot
