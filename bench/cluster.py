"""`python -m bench.cluster`: where the time goes on the local Kubernetes cluster.

Starts a cluster of its own (cluster/; the control plane binary from the cache, or built),
then measures, each split into its steps:
- the warm start (credentials, etcd, kube-apiserver, controllers, storage and nodes);
- `jobs.submit` to the first training step of a one-epoch `mean` run: the Job controller
  creating the pod, the scheduler binding it, the node starting the container, then the
  trainer's own phases (TensorFlow import, data, strategy, model) from its metrics.json;
- an eviction (the Eviction API) of a running `lstm` run to the replacement's first step:
  the old container's stop (SIGTERM, checkpoint, exit 75), the replacement pod, binding,
  start, and the resumed trainer's phases.
Kubernetes timestamps have one-second resolution; the trainer's phases are exact. Needs the
CPU image (`make image-cpu`) and root, like `make cluster`. Prints a table and writes JSON
under bench-results/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster import local
from trainer.phases import ORDER

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("IMDB_TRAIN_TEST_IMAGE", "")
PHASES = ORDER[1 : ORDER.index("model_ready") + 1]  # the trainer's, to its first step


def _ts(text: str) -> float:
    return (
        dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    )


def _kubectl(*args: str) -> str:
    return subprocess.run([str(ROOT / ".tools" / "bin" / "kubectl"), *args], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


def _cli(module: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args[:4])}...: {proc.stderr.strip()[-800:]}")


def _pods(ns: str, job: str) -> list[dict]:
    out = _kubectl("get", "pods", "-n", ns, "-l", f"job-name={job}", "-o", "json")
    return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def _cond(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def _wait(what: str, check, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"{what}: not after {timeout:.0f} s")


def _complete(ns: str, job: str) -> bool:
    j = json.loads(_kubectl("get", "job", job, "-n", ns, "-o", "json"))
    return any(c["type"] == "Complete" and c["status"] == "True"
               for c in j["status"].get("conditions", []))  # fmt: skip


def _metrics(bucket: str, key: str) -> dict:
    from tests.helpers import gcs_client

    blob = gcs_client(os.environ["STORAGE_EMULATOR_HOST"]).bucket(bucket).blob(key)
    return json.loads(blob.download_as_bytes())


def _pod_steps(pod: dict, since: float, phases: dict) -> list[tuple[str, float]]:
    """Seconds from `since` to each step of one pod: created, bound, started, then the
    trainer's phases (relative to its process start, which is the container's start)."""
    created = _ts(pod["metadata"]["creationTimestamp"])
    bound = _ts(_cond(pod, "PodScheduled")["lastTransitionTime"])
    state = pod["status"]["containerStatuses"][0]["state"]
    started = _ts((state.get("terminated") or state.get("running"))["startedAt"])
    steps = [("pod created (Job controller)", created - since), ("bound (scheduler)", bound -
             created), ("container started (node)", started - bound)]  # fmt: skip
    previous = phases["started"]  # time.time() marks, from the trainer's process start
    for name in PHASES:
        steps.append((f"trainer: {name.replace('_', ' ')}", phases[name] - previous))
        previous = phases[name]
    return steps


def run() -> dict:
    if not IMAGE:
        raise SystemExit("set IMDB_TRAIN_TEST_IMAGE to a built image (make image-cpu)")
    from tests.helpers import SHARED_TARBALL, gcs_client, small_tarball

    results: dict = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "cluster"
        started = time.monotonic()
        state = local.up(directory, job_backoff="1s")
        results["start_seconds"] = round(time.monotonic() - started, 2)
        results["start_steps"] = dict(state.timings)
        try:
            os.environ["KUBECONFIG"] = str(state.kubeconfig)
            os.environ["STORAGE_EMULATOR_HOST"] = local.storage_url(state)
            image = IMAGE
            if state.ports.get("registry"):  # real nodes pull it from the cluster's registry
                mark = time.monotonic()
                image = local.push_image(state, IMAGE)
                results["push_seconds"] = round(time.monotonic() - mark, 2)
            bucket = gcs_client(os.environ["STORAGE_EMULATOR_HOST"]).create_bucket("bench")
            for key, n in (("small.tar.gz", 300), ("medium.tar.gz", 1500)):
                path = small_tarball(Path(tmp) / key, n, SHARED_TARBALL)
                bucket.blob(f"data/{key}").upload_from_filename(str(path), timeout=120)
            ns = "bench"
            _kubectl("create", "namespace", ns)
            repo, tag = image.rsplit(":", 1)
            subprocess.run([str(ROOT / ".tools" / "bin" / "helm"), "install", "imdb-train",
                            str(ROOT / "helm" / "imdb-train"), "-n", ns, "--set",
                            f"image.repository={repo}", "--set", f"image.tag={tag}", "--set",
                            f"tests.image.tag={tag}", "--set", "output=gs://bench/imdb", "--set",
                            f"accelerator={local.ACCELERATOR}"],
                           check=True, capture_output=True)  # fmt: skip
            common = ["--namespace", ns, "--image", image, "--output", "gs://bench/imdb",
                      "--gpus", "1", "--accelerator", local.ACCELERATOR, "--cpu", "1",
                      "--memory", "2Gi"]  # fmt: skip

            # Submit to first step.
            submitted = time.time()
            _cli("jobs.submit", *common, "--model", "mean", "--run-id", "first", "--epochs",
                 "1", "--data", "gs://bench/data/small.tar.gz")  # fmt: skip
            _wait("the mean run", lambda: _complete(ns, "imdb-train-mean-first"))
            (pod,) = _pods(ns, "imdb-train-mean-first")
            phases = _metrics("bench", "imdb/mean/first/metrics.json")["phases"]
            steps = _pod_steps(pod, submitted, phases)
            results["submit_to_first_step"] = {"total": round(sum(s for _, s in steps), 1),
                                               "steps": steps}  # fmt: skip

            # Eviction to the resumed first step.
            _cli("jobs.submit", *common, "--model", "lstm", "--run-id", "evict", "--epochs",
                 "3", "--data", "gs://bench/data/medium.tar.gz")  # fmt: skip
            job = "imdb-train-lstm-evict"
            client_blobs = gcs_client(os.environ["STORAGE_EMULATOR_HOST"])
            _wait(
                "epoch 1's checkpoint",
                lambda: any(
                    True
                    for _ in client_blobs.list_blobs("bench", prefix="imdb/lstm/evict/checkpoints/")
                ),
            )
            (old,) = _pods(ns, job)
            evicted = time.time()
            from kubernetes import client, config

            api = client.CoreV1Api(config.new_client_from_config(str(state.kubeconfig)))
            name = old["metadata"]["name"]
            api.create_namespaced_pod_eviction(
                name, ns, client.V1Eviction(metadata=client.V1ObjectMeta(name=name))
            )
            _wait("the resumed run", lambda: _complete(ns, job))
            # The evicted pod is gone by now (deleted once its node stopped it): its
            # replacement's creation marks the old container's exit 75 and the Job
            # controller's reaction (podReplacementPolicy: Failed).
            (new,) = [p for p in _pods(ns, job) if p["metadata"]["uid"] != old["metadata"]["uid"]]
            phases = _metrics("bench", "imdb/lstm/evict/metrics.json")["phases"]
            steps = _pod_steps(new, evicted, phases)
            steps[0] = ("old pod stopped (exit 75) and replaced", steps[0][1])
            results["eviction_to_resumed_step"] = {"total": round(sum(s for _, s in steps), 1),
                                                   "steps": steps}  # fmt: skip
        finally:
            local.down(directory, quiet=True)
    return results


def main() -> int:
    results = run()
    print(f"warm start: {results['start_seconds']} s  {results['start_steps']}")
    for key in ("submit_to_first_step", "eviction_to_resumed_step"):
        r = results[key]
        print(f"\n{key.replace('_', ' ')}: {r['total']} s")
        for name, secs in r["steps"]:
            print(f"  {name:45} {secs:6.1f} s")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    path = out / f"cluster-{results['when'].replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\n{path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
