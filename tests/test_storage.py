"""Both stores behind one interface: local directory and gs:// against the emulator."""

from __future__ import annotations

import threading

import pytest

from trainer.storage import (
    AlreadyExistsError,
    GCSStore,
    LocalStore,
    NotFoundError,
    StoreError,
    open_store,
)


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/some/prefix")


def test_write_read_list_delete(store, tmp_path):
    store.write_bytes("run/a.json", b"{}")
    store.write_bytes("run/sub/b.bin", b"\x00\x01")
    store.upload_file(_file(tmp_path / "c.txt", b"c"), "run/c.txt")
    assert store.read_bytes("run/a.json") == b"{}"
    assert store.list("run") == ["run/a.json", "run/c.txt", "run/sub/b.bin"]
    assert store.child("run").list() == ["a.json", "c.txt", "sub/b.bin"]
    assert store.child("run", "sub").read_bytes("b.bin") == b"\x00\x01"
    assert store.exists("run/a.json") and not store.exists("run/zzz")
    store.download_file("run/sub/b.bin", tmp_path / "out" / "b.bin")
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"\x00\x01"
    assert store.delete_prefix("run") == 3
    assert store.list() == []
    with pytest.raises(NotFoundError, match="a.json does not exist"):
        store.read_bytes("run/a.json")


def test_delete_prefix_of_one_key_removes_that_object_and_no_sibling(store):
    # An in-epoch checkpoint is dropped by its own key once its epoch is checkpointed.
    for key in ("ck/epoch-0002-step-000016.keras", "ck/epoch-0002-step-000016.keras2",
                "ck/epoch-0002.keras"):  # fmt: skip
        store.write_bytes(key, b"x")
    assert store.delete_prefix("ck/epoch-0002-step-000016.keras") == 1
    assert store.list("ck") == ["ck/epoch-0002-step-000016.keras2", "ck/epoch-0002.keras"]


def test_create_only_write_refuses_to_overwrite(store):
    store.write_bytes("_SUCCESS", b"1", if_absent=True)
    with pytest.raises(AlreadyExistsError, match="_SUCCESS already exists"):
        store.write_bytes("_SUCCESS", b"2", if_absent=True)
    assert store.read_bytes("_SUCCESS") == b"1"


def test_compare_and_swap(store):
    assert store.read_versioned("latest.json") == (None, None)
    assert store.write_versioned("latest.json", b"1", None)
    assert not store.write_versioned("latest.json", b"x", None)
    data, version = store.read_versioned("latest.json")
    assert data == b"1"
    assert store.write_versioned("latest.json", b"2", version)
    assert not store.write_versioned("latest.json", b"3", version)  # stale version
    assert store.read_versioned("latest.json")[0] == b"2"


def test_concurrent_compare_and_swap_loses_no_update(store):
    """Eight threads each add one to a counter by CAS: the final value is exactly 8."""

    def bump():
        while True:
            data, version = store.read_versioned("counter")
            if store.write_versioned("counter", str(int(data or 0) + 1).encode(), version):
                return

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.read_bytes("counter") == b"8"


@pytest.mark.parametrize(
    ("uri", "kind", "message"),
    [
        pytest.param("runs", LocalStore, None, id="relative-path"),
        pytest.param("file:///tmp/x", LocalStore, None, id="file-uri"),
        pytest.param("gs://my-bucket/imdb", GCSStore, None, id="gs"),
        pytest.param("s3://bucket/x", None, "unknown output scheme 's3'", id="s3"),
        pytest.param("gs://Bad_Bucket!/x", None, "invalid bucket name 'Bad_Bucket!'", id="bucket"),
        pytest.param("gs://ab", None, "invalid bucket name 'ab'", id="short-bucket"),
    ],
)
def test_open_store(uri, kind, message):
    if message:
        with pytest.raises(StoreError, match=message):
            open_store(uri)
    else:
        assert isinstance(open_store(uri), kind)


def test_local_store_keys_cannot_escape(tmp_path):
    with pytest.raises(StoreError, match="escapes the store"):
        open_store(str(tmp_path / "s")).write_bytes("../outside", b"x")


def _file(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e9"])
def test_a_bad_gcs_deadline_is_one_line_naming_it(value, monkeypatch):
    from trainer import contract
    from trainer.storage import StoreError, open_store

    monkeypatch.setenv(contract.GCS_DEADLINE_ENV, value)
    with pytest.raises(StoreError) as info:
        open_store("gs://bucket-x/imdb")
    assert f"invalid IMDB_TRAIN_GCS_DEADLINE {value!r}: expected seconds" in str(info.value)


def test_a_frozen_store_is_given_up_on_within_about_the_deadline(monkeypatch):
    """A store that accepts connections and never answers: each request's timeout is
    within IMDB_TRAIN_GCS_DEADLINE, so the call ends in about the deadline (it took
    minutes with the client's 60 s per request) as an outage (exit 75 for the trainer)."""
    import socket
    import threading
    import time

    from trainer.storage import GCSStore, StoreUnavailableError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept_and_say_nothing():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    store = GCSStore("frozen-bucket", "imdb", deadline=2)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailableError):
            store.read_bytes("mean/latest.json")
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - started < 15
