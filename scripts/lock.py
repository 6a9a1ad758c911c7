"""`make lock`: the lock files with hashes that the image, `make setup` and CI install from.

    python scripts/lock.py           # write requirements/*.lock from pyproject.toml (uv)
    python scripts/lock.py --check   # exit 1 naming what pyproject.toml wants and a lock lacks

Every lock is compiled by `uv pip compile --generate-hashes` from pyproject.toml alone (its
dependencies, one extra, and the build-system requirements, since the image installs the
package without build isolation), for the image's Python and platform:

    requirements/dev.lock        `make setup` and CI: the cpu and dev extras
    requirements/image-cpu.lock  the CPU image: the cpu extra
    requirements/image-gpu.lock  the GPU image: the train extra with TensorFlow's CUDA wheels

Each is installed with `pip install --require-hashes --no-deps -r LOCK`: every wheel is
checked against its hash and nothing is resolved at install time. `tensorflow` (the GPU
build, which tf-keras asks for by that name) is left out of the CPU locks: tensorflow-cpu
provides the same module.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PYTHON = "3.11"  # Debian bookworm's, the image's (Dockerfile)
PLATFORM = "x86_64-manylinux_2_28"
# name -> (extras, extra requirements, packages left out)
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "dev": (("cpu", "dev"), (), ("tensorflow",)),
    "image-cpu": (("cpu",), (), ("tensorflow",)),
    "image-gpu": (("train",), ("tensorflow[and-cuda]",), ()),
}
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


def pyproject(root: Path = ROOT) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


def wanted(variant: str, root: Path = ROOT) -> list[str]:
    """The requirements of a variant, as pyproject.toml states them."""
    project = pyproject(root)
    extras, more, _ = VARIANTS[variant]
    reqs = list(project["project"]["dependencies"])
    for extra in extras:
        reqs += project["project"]["optional-dependencies"][extra]
    reqs += project["build-system"]["requires"]
    return reqs + list(more)


def pins(lock: Path) -> dict[str, tuple[str, bool]]:
    """name -> (version, hashed) of a lock file."""
    out: dict[str, tuple[str, bool]] = {}
    text = lock.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = _PIN.match(block.strip())
        if m:
            out[normalize(m.group(1))] = (m.group(2), "--hash=sha256:" in block)
    return out


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_lock(variant: str) -> None:
    _, _, left_out = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{variant}.in"
        source.write_text("\n".join(wanted(variant)) + "\n")
        cmd = [
            sys.executable, "-m", "uv", "pip", "compile", str(source), "--generate-hashes",
            "--python-version", PYTHON, "--python-platform", PLATFORM, "--quiet",
            "--custom-compile-command", "make lock", "-o", str(LOCKS / f"{variant}.lock"),
        ]  # fmt: skip
        for name in left_out:
            cmd += ["--no-emit-package", name]
        subprocess.run(cmd, check=True)
    lock = LOCKS / f"{variant}.lock"
    lock.write_text(lock.read_text().replace(str(source), f"{variant} of pyproject.toml"))


def check(root: Path = ROOT) -> list[str]:
    """What pyproject.toml asks for that a lock does not satisfy (or pins without a hash)."""
    from packaging.requirements import Requirement

    problems = []
    for variant, (_, _, left_out) in VARIANTS.items():
        lock = root / "requirements" / f"{variant}.lock"
        if not lock.exists():
            problems.append(f"{lock.relative_to(root)} is missing: run `make lock`")
            continue
        locked = pins(lock)
        for name, (_, hashed) in locked.items():
            if not hashed:
                problems.append(f"{lock.relative_to(root)}: {name} has no --hash")
        for text in wanted(variant, root):
            req = Requirement(text)
            name = normalize(req.name)
            if name in left_out:
                continue
            if name not in locked:
                problems.append(f"{lock.relative_to(root)} lacks {text} (pyproject.toml)")
            elif not req.specifier.contains(locked[name][0], prereleases=True):
                problems.append(
                    f"{lock.relative_to(root)} pins {name}=={locked[name][0]}, but "
                    f"pyproject.toml wants {text}: run `make lock`"
                )
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        problems = check()
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if not problems:
            print(f"locks agree with pyproject.toml: {', '.join(VARIANTS)}")
        return 1 if problems else 0
    LOCKS.mkdir(exist_ok=True)
    for variant in VARIANTS:
        print(f"lock: requirements/{variant}.lock", file=sys.stderr)
        compile_lock(variant)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
