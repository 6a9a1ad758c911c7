"""The built image runs the Jobs jobs.submit renders, under the pod's security context.

Each test renders a Job with `python -m jobs.submit --dry-run`, starts its container in the
image's root filesystem (tests/image/kubelet.py: read-only root, emptyDirs as tmpfs, uid
10001, tini as PID 1 in its own PID namespace, host network) and trains into a GCS emulator
on 127.0.0.1 holding the IMDB tarball, as a cluster's pods read from and write to a bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import free_ports, gcs_client
from tests.image.kubelet import IMAGE_ENV, Image, Kubelet, render, the_job
from trainer.contract import (
    COMPLETION_INDEX_ENV,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PREEMPTED,
    METRICS,
    SUCCESS,
    WORKER_HOSTS_ENV,
    checkpoint_key,
    in_epoch_position,
    run_key,
)

# Several containers per test, each starting TensorFlow on a shared 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
DATA_KEY = "data/aclImdb_v1_labelled.tar.gz"
RUN_TIMEOUT = 600  # one container, TensorFlow start-up and encoding included, on 2 busy cores


@pytest.fixture(scope="module")
def image():
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (buildah, mount namespaces, chroot)")
    with Image(os.environ[IMAGE_ENV]) as img:
        yield img


@pytest.fixture(scope="module")
def kubelet(image, tmp_path_factory) -> Kubelet:
    return Kubelet(image, tmp_path_factory.mktemp("pods"))


@pytest.fixture(scope="module")
def bucket(gcs_emulator, shared_tarball) -> str:
    """A bucket holding the IMDB tarball, as a cluster's data bucket would."""
    name = f"image-{uuid.uuid4().hex[:10]}"
    b = gcs_client(gcs_emulator).create_bucket(name)
    b.blob(DATA_KEY).upload_from_filename(str(shared_tarball), timeout=300)
    return name


@pytest.fixture
def cluster_env(gcs_emulator) -> dict[str, str]:
    """What the cluster gives a pod and the manifest does not name: the storage endpoint
    (here the emulator; in GKE, Workload Identity's metadata server) and a short retry
    deadline so that a broken store fails a test in seconds, not minutes."""
    return {"STORAGE_EMULATOR_HOST": gcs_emulator, "IMDB_TRAIN_GCS_DEADLINE": "30"}


def submit_args(
    bucket: str,
    model: str,
    run_id: str,
    *extra: str,
    epochs: int = 2,
    sample: int = 500,
    workers: int = 1,
    image: str = "",
) -> list[str]:
    """jobs.submit flags of a CPU Job reading and writing the emulator's bucket."""
    return [
        "--model", model, "--image", image or os.environ[IMAGE_ENV], "--gpus", "0",
        "--epochs", str(epochs), "--data", f"gs://{bucket}/{DATA_KEY}",
        "--output", f"gs://{bucket}/imdb", "--run-id", run_id, "--workers", str(workers),
        "--cpu", "1", "--cpu-limit", "2", "--memory", "4Gi", "--memory-limit", "4Gi",
        f"--extra-args={json.dumps(['--sample', str(sample), *extra])}",
    ]  # fmt: skip


def keys(emulator: str, bucket: str, prefix: str) -> set[str]:
    blobs = gcs_client(emulator).list_blobs(bucket, prefix=prefix.rstrip("/") + "/")
    return {b.name[len(prefix.rstrip("/")) + 1 :] for b in blobs}


def results_cli(emulator: str, *argv: str) -> subprocess.CompletedProcess:
    """`python -m jobs.results ...` outside the container, as a user's laptop runs it."""
    env = {**os.environ, "STORAGE_EMULATOR_HOST": emulator, "IMDB_TRAIN_GCS_DEADLINE": "30"}
    return subprocess.run(
        [sys.executable, "-m", "jobs.results", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_both_models_train_into_the_bucket_and_results_read_them(
    kubelet, bucket, gcs_emulator, cluster_env
):
    run_id = f"img-{uuid.uuid4().hex[:6]}"
    objects = render(*submit_args(bucket, "all", run_id))
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert len(jobs) == 2
    for job in jobs:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        c = kubelet.start(job, extra_env=cluster_env)
        code = c.wait(RUN_TIMEOUT)
        assert code == EXIT_OK, c.tail()
        model = job["metadata"]["labels"]["imdb-train/model"]
        assert "final: " in c.output
        stored = keys(gcs_emulator, bucket, f"imdb/{run_key(model, run_id)}")
        assert {SUCCESS, METRICS, checkpoint_key(2)} <= stored
        print(f"{model}: exit 0 in {time.monotonic() - c.started:.0f}s, {len(stored)} objects")

    listed = results_cli(gcs_emulator, "list", "--output", f"gs://{bucket}/imdb")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    for model in ("mean", "lstm"):
        (row,) = [r for r in rows if r[:2] == [model, run_id]]
        assert row[2] == "complete" and row[4] == "2", listed.stdout
        shown = results_cli(
            gcs_emulator, "show", "--output", f"gs://{bucket}/imdb", "--model", model,
            "--run-id", run_id, "--json-output",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        metrics = json.loads(shown.stdout)["metrics"]
        assert metrics["epochs_completed"] == 2 and 0 <= metrics["test_accuracy"] <= 1
        # What trained it: the pod's image, the revision and the lock baked into the image.
        build = json.loads(shown.stdout)["build"]
        lock = (ROOT / "requirements" / "image-cpu.lock").read_bytes()
        assert build["in_image"] is True and build["image"] == os.environ[IMAGE_ENV]
        assert build["lock"] == "image-cpu.lock"
        assert build["lock_sha256"] == hashlib.sha256(lock).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", build["revision"]), build
        text = results_cli(gcs_emulator, "show", "--output", f"gs://{bucket}/imdb", "--model",
                           model, "--run-id", run_id)  # fmt: skip
        assert f"trained by     image {os.environ[IMAGE_ENV]}, revision {build['revision']}" in (
            text.stdout
        )
        print(f"{model}: trained by {build}")


def test_sigterm_to_pid_1_exits_75_in_the_grace_period_and_the_rerun_resumes(
    kubelet, bucket, gcs_emulator, cluster_env
):
    run_id = f"img-{uuid.uuid4().hex[:6]}"
    # 3000 reviews: an LSTM epoch long enough that a signal sent just after epoch 1's
    # checkpoint lands inside epoch 2.
    job = the_job(render(*submit_args(bucket, "lstm", run_id, epochs=3, sample=3000)))
    grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    c = kubelet.start(job, extra_env=cluster_env)
    pid1 = c.wait_exec("tini")
    nspid = Path(f"/proc/{pid1}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
    assert nspid[-1] == "1"  # tini is PID 1 in the container's PID namespace
    try:
        for line in c.lines(RUN_TIMEOUT):
            if "checkpoint: epoch 1 " in line:
                time.sleep(0.3)
                os.kill(pid1, signal.SIGTERM)  # what the kubelet does on deletion/drain
                sent = time.monotonic()
                break
        else:
            pytest.fail(f"no epoch-1 checkpoint:\n{c.tail()}")
        code = c.wait(grace)  # then the kubelet would SIGKILL
        took = time.monotonic() - sent
    finally:
        c.kill()
    assert code == EXIT_PREEMPTED, c.tail()
    assert took < grace
    assert "stopped, resumable" in c.output
    stored = keys(gcs_emulator, bucket, f"imdb/{run_key('lstm', run_id)}")
    assert checkpoint_key(1) in stored
    assert checkpoint_key(2) not in stored and SUCCESS not in stored
    # The step epoch 2 stopped at is checkpointed: the rerun goes on from there.
    (step,) = [p[1] for p in map(in_epoch_position, stored) if p and p[0] == 2]

    again = kubelet.start(job, extra_env=cluster_env)  # the Job's next pod: fresh emptyDirs
    assert again.wait(RUN_TIMEOUT) == EXIT_OK, again.tail()
    assert f"resuming run {run_id} in epoch 2 of 3 from step {step} of " in again.output
    stored = keys(gcs_emulator, bucket, f"imdb/{run_key('lstm', run_id)}")
    assert {SUCCESS, checkpoint_key(3)} <= stored
    print(f"SIGTERM -> exit {code} in {took:.1f}s (grace {grace}s); rerun from step {step}")


def test_unknown_model_exits_2_with_one_line(kubelet, bucket, cluster_env):
    job = the_job(render(*submit_args(bucket, "mean", f"img-{uuid.uuid4().hex[:6]}")))
    # jobs.submit refuses an unknown model, so the manifest is edited by hand, as a user
    # of the plain manifests might.
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    args[args.index("--model") + 1] = "transformer"
    c = kubelet.start(job, extra_env=cluster_env)
    assert c.wait(RUN_TIMEOUT) == EXIT_BAD_INPUT, c.tail()
    lines = [ln for ln in c.output.splitlines() if ln.strip()]
    assert len(lines) == 1, c.output
    assert "'transformer'" in lines[0] and "mean" in lines[0] and "lstm" in lines[0]
    print(f"unknown model: exit 2, {lines[0]}")


PROBE = r"""
import errno, os, sys
out = {}
# The read-only image paths, then every mounted emptyDir (given as arguments).
for path in ("/probe", "/etc/probe", "/opt/imdb-train/probe", "/opt/venv/probe",
             *(f"{m}/probe" for m in sys.argv[1:])):
    try:
        with open(path, "w") as f:
            f.write("x")
        out[path] = "ok"
    except OSError as e:
        out[path] = errno.errorcode[e.errno]
out["uid"] = [os.getuid(), os.getgid(), sorted(os.getgroups())]
out["pid"] = os.getpid()
out["home"] = os.environ["HOME"]
status = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines())
out["caps"] = [status[k].strip() for k in ("CapEff", "CapPrm", "NoNewPrivs")]
print(__import__("json").dumps(out))
"""


def test_writes_outside_the_emptydirs_fail(kubelet, bucket):
    job = the_job(render(*submit_args(bucket, "mean", f"img-{uuid.uuid4().hex[:6]}")))
    container = job["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    container["command"] = ["tini", "--", "python", "-c", PROBE]
    container["args"] = sorted(mounts)
    c = kubelet.start(job)
    assert c.wait(120) == EXIT_OK, c.tail()
    seen = json.loads(c.output.strip().splitlines()[-1])
    for path in ("/probe", "/etc/probe", "/opt/imdb-train/probe", "/opt/venv/probe"):
        assert seen[path] == "EROFS", seen
    for mount in mounts:
        assert seen[f"{mount}/probe"] == "ok", seen
    assert seen["uid"] == [10001, 10001, [10001]]
    assert seen["pid"] != 1  # tini is PID 1, python its child
    assert seen["home"] in mounts
    # capabilities: drop ALL, allowPrivilegeEscalation: false
    assert seen["caps"] == ["0000000000000000", "0000000000000000", "1"], seen
    print(f"writes: {seen}")


def test_two_worker_indexed_job_trains_one_model(
    image, bucket, gcs_emulator, cluster_env, tmp_path
):
    run_id = f"img-{uuid.uuid4().hex[:6]}"
    # 1024 reviews: whole batches of 64. With a partial last batch (1000 reviews) and the
    # default 16 steps per compiled call the group failed in its first epoch here ("Shape
    # mismatch in the collective instance"); with --steps-per-execution 1 it trained.
    # tests/test_multiworker.py, too, trains on whole batches only.
    objects = render(*submit_args(bucket, "lstm", run_id, sample=1024, workers=2))
    job = the_job(objects)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    (service,) = [o for o in objects if o["kind"] == "Service"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    (hosts,) = [e["value"] for e in container["env"] if e["name"] == WORKER_HOSTS_ENV]
    names = [h.rsplit(":", 1)[0] for h in hosts.split(",")]
    assert names == [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}"
                     for i in range(2)]  # fmt: skip
    # Pods have their own network namespaces, so both listen on 2222; on one host they
    # share one, so each worker gets its own port. The names stay the rendered ones and
    # resolve through /etc/hosts, as the headless Service's DNS records would resolve them.
    ports = free_ports(2)
    hosts_here = ",".join(f"{n}:{p}" for n, p in zip(names, ports, strict=True))
    node = Kubelet(image, tmp_path, hosts=dict.fromkeys(names, "127.0.0.1"))
    workers = [
        node.start(job, index=i, extra_env=cluster_env,
                   env_override={WORKER_HOSTS_ENV: hosts_here})
        for i in range(2)
    ]  # fmt: skip
    try:
        codes = [w.wait(RUN_TIMEOUT) for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.env[COMPLETION_INDEX_ENV] for w in workers] == ["0", "1"]
    assert codes == [EXIT_OK, EXIT_OK], "\n".join(w.tail() for w in workers)
    finals = []
    for w in workers:
        (line,) = [ln for ln in w.output.splitlines() if ln.startswith("final: ")]
        finals.append(json.loads(line[len("final: ") :]))
    assert [f["chief"] for f in finals] == [True, False]
    assert finals[0]["replicas"] == finals[1]["replicas"] == 2
    assert finals[0]["test_accuracy"] == finals[1]["test_accuracy"]
    stored = keys(gcs_emulator, bucket, f"imdb/{run_key('lstm', run_id)}")
    assert SUCCESS in stored
    config = json.loads(
        gcs_client(gcs_emulator).bucket(bucket)
        .blob(f"imdb/{run_key('lstm', run_id, 'config.json')}").download_as_bytes()
    )  # fmt: skip
    assert config["keras"] == "tf-keras", config
    print(f"2 workers: test accuracy {finals[0]['test_accuracy']} on both, chief wrote the run")
