"""`python -m bench.preemption`: the training seconds a preemption costs, with real processes.

Each case starts the trainer (one process, or a group of worker processes on 127.0.0.1 as
pods of an Indexed Job), sends SIGTERM to one of them `--delay` seconds into epoch 2 (as
Kubernetes signals the one preempted pod), and reads what the stop left:

- `cut_s`: the training seconds of epoch 2 done when the signal came. Before the in-epoch
  checkpoint the trainer dropped them (it resumed after epoch 1): that is the work redone
  per preemption then, up to a whole epoch.
- `redone_s`: the training seconds redone now: the steps the stopped run made (its last
  line) that its checkpoint does not hold, times the epoch's seconds per step.
- `save_s`: the in-epoch checkpoint's own time; `checkpointed_s`: from SIGTERM to the
  checkpoint in the store (the compiled call in flight, then the save), which must fit
  the grace period (GKE Spot: 15 s Standard, 25 s Autopilot); `exit_s`: to the last
  exit (TensorFlow's own teardown after that; a SIGKILL then loses nothing).
- `resume_s`: the rerun's start-up is not training redone, but is paid per preemption
  too (the new pod's start is not in it): from its start to its `resuming ...` line.

Then it reruns the same run id to completion and checks that it resumed from that step.
The machine's speed varies: compare the figures of one run, never across runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.controlplane import free_ports
from trainer import contract

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1_labelled.tar.gz"
SAVED = re.compile(r"checkpoint: step (\d+) of (\d+) in epoch (\d+) .* in ([\d.]+)s")
STOPPED = re.compile(r"stopped by .* in epoch \d+ of \d+ after step (\d+) of")


def _env(extra: dict) -> dict:
    env = {**os.environ, contract.PROGRESS_ENV: "0", "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1", contract.LEASE_SECONDS_ENV: "6", **extra}  # fmt: skip
    env.pop("TF_USE_LEGACY_KERAS", None)  # the trainer chooses it
    return env


def _start(args: list[str], workers: int, logs: Path, launch: str) -> list[subprocess.Popen]:
    ports = free_ports(workers)
    procs = []
    for i in range(workers):
        extra = {}
        if workers > 1:
            hosts = [f"127.0.0.1:{p}" for p in ports]
            extra["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
            )
        out = open(logs / f"{launch}-{i}.log", "w")  # noqa: SIM115 (the child holds it)
        procs.append(
            subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=_env(extra),
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )  # fmt: skip
    return procs


def _wait_for(path: Path, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit(f"error: {path.name} never appeared; see the logs")
        time.sleep(0.02)


def case(model: str, workers: int, sample: int, delay: float, work: Path) -> dict:
    """One preemption of one configuration, and the rerun after it; its figures."""
    store = work / f"store-{model}-{workers}"
    logs = work / f"logs-{model}-{workers}"
    logs.mkdir(parents=True)
    run_id = "pre"
    args = ["--model", model, "--data", str(DATA), "--output", str(store), "--run-id", run_id,
            "--epochs", "2", "--sample", str(sample), "--cache-dir", str(work / "cache"),
            "--neighbours", "great", "--promote", "false"]  # fmt: skip
    run = store / model / run_id
    procs = _start(args, workers, logs, "first")
    try:
        _wait_for(run / contract.checkpoint_key(1), procs, 600)
        time.sleep(delay)
        signalled = time.monotonic()
        procs[-1].send_signal(signal.SIGTERM)  # the last worker: not the chief, in a group
        saved_s = None
        while any(p.poll() is None for p in procs) and time.monotonic() < signalled + 120:
            if saved_s is None and any(contract.is_in_epoch_key(f"checkpoints/{f.name}")
                                       for f in (run / "checkpoints").iterdir()):  # fmt: skip
                saved_s = time.monotonic() - signalled
            time.sleep(0.02)
        codes = [p.wait(timeout=30) for p in procs]
        exit_s = time.monotonic() - signalled
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    keys = [f"{contract.CHECKPOINT_DIR}/{p.name}" for p in (run / "checkpoints").iterdir()]
    cut = [contract.in_epoch_position(k) for k in keys if contract.in_epoch_position(k)]
    if len(cut) != 1:
        # The signal came in the epoch's last compiled call or its validation: the whole
        # epoch was checkpointed, nothing to measure. A shorter --delay lands inside it.
        print(f"{model} workers={workers}: stopped at an epoch's end (exits {codes})")
        return {"model": model, "workers": workers, "exits": codes, "step": None}
    epoch, step = cut[0]
    state = json.loads((run / contract.in_epoch_state_key(epoch, step)).read_text())
    part = state["in_epoch"]
    chief_log = (logs / "first-0.log").read_text()
    saved = SAVED.search(chief_log)
    stopped = STOPPED.search(chief_log)
    made = int(stopped.group(1)) if stopped else step
    per_step = part["seconds"] / part["step"]

    started = time.monotonic()
    procs = _start(args, workers, logs, "rerun")
    resumed = None
    while resumed is None and procs[0].poll() is None:
        if "resuming run" in (logs / "rerun-0.log").read_text():
            resumed = time.monotonic() - started
        time.sleep(0.05)
    rerun = [p.wait(timeout=900) for p in procs]
    said = f"resuming run {run_id} in epoch {epoch} of 2 from step {step} of {part['steps']}"
    if rerun != [0] * workers or said not in (logs / "rerun-0.log").read_text():
        raise SystemExit(f"error: the rerun did not resume from step {step} (exits {rerun})")
    return {
        "model": model,
        "workers": workers,
        "exits": codes,
        "step": step,
        "steps": part["steps"],
        "epoch_1_s": state["epoch_seconds"][0],
        "cut_s": part["seconds"],
        "redone_s": round((made - step) * per_step, 3),
        "save_s": float(saved.group(4)) if saved else None,
        "checkpointed_s": round(saved_s, 2) if saved_s is not None else None,
        "exit_s": round(exit_s, 2),
        "resume_s": round(resumed, 2) if resumed is not None else None,
    }


def main(
    models: str = "mean,lstm", workers: str = "1,2", sample: int = 6000, delay: float = 0.5
) -> None:
    """Print one line per (model, workers): seconds redone per preemption before and after.

    Args:
        models: comma-separated models.
        workers: comma-separated group sizes (1: one process).
        sample: reviews per split (an epoch long enough to be signalled inside).
        delay: seconds into epoch 2 the SIGTERM is sent.
    """
    if not DATA.exists():
        raise SystemExit(f"error: the IMDB tarball is not at {DATA}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-preemption-") as tmp:
        for n in (int(w) for w in str(workers).split(",")):
            for model in str(models).split(","):
                row = case(model, n, sample, delay, Path(tmp))
                rows.append(row)
                if row["step"] is None:
                    continue
                print(
                    f"{model:5} workers={n}: stopped at step {row['step']}/{row['steps']}; "
                    f"redone before {row['cut_s']:.2f}s (epoch {row['epoch_1_s']:.1f}s), "
                    f"after {row['redone_s']:.2f}s; save {row['save_s']}s, SIGTERM->checkpoint "
                    f"{row['checkpointed_s']}s, ->exit {row['exit_s']}s; rerun to its "
                    f"resume line {row['resume_s']}s",
                    flush=True,
                )
    print(json.dumps(rows))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
