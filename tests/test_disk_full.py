"""The local scratch volume fills up mid-run (another process, a small emptyDir): one line,
exit 75, no temp files of ours left, the checkpoints already in the store intact, and a
rerun resumes. Needs root to mount a small tmpfs, as CI and the dev machine have."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, trainer_env, write_tarball
from tests.mounts import tmpfs
from trainer import contract

pytestmark = pytest.mark.slow


@pytest.fixture
def small_volume(tmp_path):
    with tmpfs(tmp_path / "scratch", 16 * 1024) as mnt:
        yield mnt


def test_full_scratch_volume_mid_run_stops_resumable_and_loses_nothing(tmp_path, small_volume):
    data = write_tarball(tmp_path / "tiny.tar.gz")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "trainer", "--model", "mean", "--data", str(data),
            "--output", str(out), "--run-id", "full", "--epochs", "30",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    run = out / "mean" / "full"
    proc = subprocess.Popen(args, cwd=ROOT, env=trainer_env(TMPDIR=str(small_volume)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    filler = small_volume / "filler"
    try:
        deadline = time.monotonic() + 120
        while not (run / contract.checkpoint_key(1)).exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        # Another writer takes every free byte of the volume.
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        out_text, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == contract.EXIT_PREEMPTED, err[-2000:]
    assert len(lines) == 1 and "no space left on the local disk" in lines[0], err[-2000:]
    assert "--run-id full" in lines[0]
    assert sorted(p.name for p in small_volume.iterdir()) == ["filler"]  # nothing of ours left
    kept = sorted(p.name for p in (run / contract.CHECKPOINT_DIR).glob("epoch-*.keras"))
    assert kept and not (run / contract.SUCCESS).exists()
    filler.unlink()
    again = subprocess.run(args, cwd=ROOT, env=trainer_env(TMPDIR=str(small_volume)),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run full after epoch {len(kept)} of 30" in again.stdout
