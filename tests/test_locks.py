"""The lock files agree with pyproject.toml, and every pin carries a hash."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def test_the_locks_satisfy_pyproject_and_are_hashed():
    assert lock.check() == []


@pytest.fixture
def copy(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_a_requirement_the_lock_does_not_satisfy_is_named(copy):
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=1.26"', '"numpy>=99"'))
    problems = lock.check(copy)
    assert len(problems) == 3  # every lock pins numpy
    assert all("pins numpy==" in p and "wants numpy>=99: run `make lock`" in p for p in problems)


def test_a_new_requirement_and_a_pin_without_hash_are_named(copy):
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text().replace('"pyyaml>=6",', '"pyyaml>=6", "imdb-extra-dep>=1",')
    pyproject.write_text(text)
    dev = copy / "requirements" / "dev.lock"
    dev.write_text(dev.read_text() + "unhashed-dep==1.0\n")
    problems = lock.check(copy)
    assert sum("lacks imdb-extra-dep>=1 (pyproject.toml)" in p for p in problems) == 3
    assert "requirements/dev.lock: unhashed-dep has no --hash" in problems
