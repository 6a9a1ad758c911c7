"""Store paths cannot escape, artifacts get ordinary modes, and unwritable or full
outputs fail cleanly: one line, exit 2 before any work, nothing lost."""

from __future__ import annotations

import os
import stat

import pytest

from tests.helpers import run_trainer, seed_good_run, snapshot, write_tarball
from tests.mounts import fill, tmpfs
from trainer.contract import EXIT_BAD_INPUT, EXIT_PREEMPTED, checkpoint_key
from trainer.storage import LocalStore, StoreError, open_store


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param("gs://bkt/../x", "'.' and '..' segments are not allowed", id="gs-dotdot"),
        pytest.param("gs://bkt/a/./b", "'.' and '..' segments are not allowed", id="gs-dot"),
        pytest.param("file://relative", "invalid file URI 'file://relative'", id="file-relative"),
        pytest.param("file://host/path", "invalid file URI 'file://host/path'", id="file-host"),
    ],
)
def test_open_store_refuses_uris_that_leave_the_store(uri, message):
    with pytest.raises(StoreError, match=message):
        open_store(uri)


@pytest.mark.parametrize(
    ("uri", "root"),
    [("file:///tmp/x", "/tmp/x"), ("file://localhost/tmp/x", "/tmp/x")],
)
def test_file_uris_name_absolute_paths(uri, root):
    store = open_store(uri)
    assert isinstance(store, LocalStore) and store.uri == root


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store" / "imdb"))
    return open_store(f"gs://{request.getfixturevalue('gcs_bucket')}/imdb")


@pytest.mark.parametrize("parts", [("..",), ("mean", ".."), ("a/../..",), ("mean", "./x")])
def test_child_cannot_leave_the_store(store, parts):
    with pytest.raises(StoreError, match="'.' and '..' segments are not allowed"):
        store.child(*parts)


def test_local_child_refuses_absolute_parts(tmp_path):
    with pytest.raises(StoreError, match="must be relative"):
        LocalStore(tmp_path).child("/etc")


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)],
)
def test_artifacts_get_modes_from_the_umask(tmp_path, umask, file_mode, dir_mode):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    old = os.umask(umask)
    try:
        store = open_store(str(tmp_path / "runs"))
        store.write_bytes("mean/r1/metrics.json", b"{}")
        store.write_bytes("mean/r1/_SUCCESS", b"", if_absent=True)
        store.upload_file(src, "mean/r1/checkpoints/epoch-0001.keras")
        store.download_file("mean/r1/metrics.json", tmp_path / "pulled" / "metrics.json")
    finally:
        os.umask(old)
    root = tmp_path / "runs"
    for path in list(root.rglob("*")) + [tmp_path / "pulled" / "metrics.json"]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (dir_mode if path.is_dir() else file_mode), (path, oct(mode))


def test_disk_full_fails_the_write_cleanly(tmp_path):
    """A real full filesystem (tmpfs): the failing write leaves no temp file and the
    earlier epochs' checkpoints (and an earlier version of the key) are intact."""
    with tmpfs(tmp_path / "vol", 512) as vol:
        store = open_store(str(vol / "runs")).child("mean", "r1")
        first = os.urandom(64 << 10)
        store.write_bytes(checkpoint_key(1), first)
        store.write_bytes("state.json", b'{"epoch": 1}')
        fill(vol, leave=16 << 10)
        before = snapshot(vol / "runs")
        for key in (checkpoint_key(2), "state.json"):  # a new key, and a replaced one
            with pytest.raises(StoreError) as err:
                store.write_bytes(key, os.urandom(128 << 10))
            assert str(err.value) == f"cannot write {store.uri}/{key}: No space left on device"
        assert snapshot(vol / "runs") == before
        assert not list((vol / "runs").rglob(".*"))  # no temp files
        assert store.read_bytes(checkpoint_key(1)) == first


# ----------------------------------------------------------------------------- the CLI


def _cli(tmp_path, output: str, **env: str):
    src = tmp_path / "tiny.tar.gz"
    if not src.exists():
        write_tarball(src)
    cache = tmp_path / "cache"
    proc = run_trainer(
        [
            "--model",
            "mean",
            "--data",
            str(src),
            "--output",
            output,
            "--run-id",
            "r2",
            "--epochs",
            "1",
            "--cache-dir",
            str(cache),
        ],
        **env,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not cache.exists()  # refused before the data was read
    return lines[0]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        pytest.param("gs://bkt/../x", "'.' and '..' segments are not allowed", id="gs-dotdot"),
        pytest.param("file://relative", "invalid file URI", id="file-relative"),
        pytest.param("file://host/path", "invalid file URI", id="file-host"),
        pytest.param("{tmp}/runs/mean/good/metrics.json", "cannot write to {tmp}/runs/mean/good/"
                     "metrics.json: {tmp}/runs/mean/good/metrics.json is not a directory",
                     id="output-is-a-file"),
        pytest.param("{tmp}/runs/mean/good/metrics.json/sub", "cannot write to {tmp}/runs/mean/"
                     "good/metrics.json/sub: {tmp}/runs/mean/good/metrics.json is not a "
                     "directory", id="output-under-a-file"),
    ],
)  # fmt: skip
def test_unusable_output_is_refused_first(tmp_path, output, message):
    seed_good_run(tmp_path / "runs")
    before = snapshot(tmp_path / "runs")
    line = _cli(tmp_path, output.replace("{tmp}", str(tmp_path)))
    assert message.replace("{tmp}", str(tmp_path)) in line, line
    assert snapshot(tmp_path / "runs") == before


def test_read_only_output_is_refused_first(tmp_path):
    with tmpfs(tmp_path / "ro", 64, read_only=True) as ro:
        line = _cli(tmp_path, str(ro / "runs"))
    assert line == f"error: cannot write to {ro}/runs: Read-only file system ({ro})"


def test_missing_bucket_is_bad_input_not_retryable(gcs_emulator, tmp_path):
    line = _cli(
        tmp_path,
        "gs://no-such-bucket/x",
        STORAGE_EMULATOR_HOST=gcs_emulator,
        IMDB_TRAIN_GCS_DEADLINE="10",
    )
    assert (
        line == "error: cannot write to gs://no-such-bucket/x: bucket not found: "
        "gs://no-such-bucket"
    )


@pytest.mark.slow
def test_disk_full_mid_run_is_one_line_and_keeps_earlier_checkpoints(tmp_path):
    """A real training run whose store (a tmpfs) fills up at the second checkpoint: one
    line, the retryable exit, epoch 1's checkpoint and an earlier run intact, no temp file."""
    src = write_tarball(tmp_path / "tiny.tar.gz")
    # A mean model with a 2000-word vocabulary checkpoints about 780 KiB per epoch.
    with tmpfs(tmp_path / "vol", 1400) as vol:
        seed_good_run(vol / "runs")
        before = snapshot(vol / "runs")
        proc = run_trainer(
            ["--model", "mean", "--data", str(src), "--output", str(vol / "runs"),
             "--run-id", "full", "--epochs", "3", "--vocab-size", "2000",
             "--cache-dir", str(tmp_path / "cache")],
            timeout=300,
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        run = vol / "runs" / "mean" / "full"
        assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-3000:]
        assert lines[-1] == (
            f"stopped, resumable: cannot write {run}/{checkpoint_key(2)}: No space left on "
            "device; rerun with --run-id full to resume from the last checkpoint"
        ), proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert (run / checkpoint_key(1)).stat().st_size > 0
        assert not (run / checkpoint_key(2)).exists() and not (run / "_SUCCESS").exists()
        assert not list(vol.rglob(".*.tmp"))
        after = snapshot(vol / "runs")
        assert {k: v for k, v in after.items() if not k.startswith("mean/full/")} == before


def test_a_symlink_loop_on_the_output_path_is_refused_first(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    line = _cli(tmp_path, str(tmp_path / "loop" / "runs"))
    assert f"{tmp_path}/loop is a symbolic link that leads nowhere" in line, line


def test_a_symlink_loop_inside_the_output_is_refused_first(tmp_path):
    """The output is fine, the run's own path is not (its model folder loops)."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mean").symlink_to(tmp_path / "runs" / "mean")
    line = _cli(tmp_path, str(tmp_path / "runs"))
    assert f"cannot write to {tmp_path}/runs/mean/r2" in line and "leads nowhere" in line, line


def test_a_read_only_run_folder_is_refused_before_the_data_is_read(tmp_path):
    """A resumed run whose folder cannot be written (here a read-only mount): one line at
    start-up, not a crash after the data load."""
    run = tmp_path / "runs" / "mean" / "r2"
    run.mkdir(parents=True)
    with tmpfs(run, 64, read_only=True):
        line = _cli(tmp_path, str(tmp_path / "runs"))
    assert line == f"error: cannot write to {run}: Read-only file system ({run})", line


def test_temp_files_a_killed_publisher_left_are_removed_by_the_next_attempt(tmp_path):
    """SIGKILL between a temp file's write and its rename leaves `.NAME.*.tmp` in the run;
    the next attempt (holding the run's lease) removes them, and the run completes."""
    run = tmp_path / "runs" / "mean" / "r2"
    (run / "checkpoints").mkdir(parents=True)
    for stray in (run / ".metrics.json.k3j2.tmp", run / "checkpoints" / ".epoch-0001.keras.x.tmp"):
        stray.write_bytes(b"half")
    src = write_tarball(tmp_path / "tiny.tar.gz")
    proc = run_trainer(["--model", "mean", "--data", str(src), "--output", str(tmp_path / "runs"),
                        "--run-id", "r2", "--epochs", "1",
                        "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removed 2 temp files an interrupted attempt left" in proc.stdout + proc.stderr
    assert not list(run.rglob("*.tmp"))
    assert (run / "_SUCCESS").exists()
