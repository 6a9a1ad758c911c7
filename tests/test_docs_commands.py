"""Every command in the docs' shell blocks runs as written: make targets dry-run (`make -n`),
our `python -m` commands know every flag they are given, `jobs.submit` lines dry-run, a
pushed image is one the block built, and `--build-arg`s are ARGs the Dockerfile reads."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys

import pytest

from tests.fakes.k8s_checks import ROOT

DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
# The walk-through's placeholders, as a user fills them in (a valid bucket, region, ...).
PLACEHOLDERS = {
    "REGION": "europe-west4",
    "PROJECT_NUMBER": "123456789",
    "PROJECT": "my-project",
    "BUCKET": "my-bucket",
    "REGISTRY": "europe-west4-docker.pkg.dev/my-project/imdb",
    "$IMAGE": "europe-west4-docker.pkg.dev/my-project/imdb/imdb-train:0.1.0",
}
# Our commands, whose flags are checked against their own --help.
OURS = ("jobs.", "trainer", "bench", "cluster")


def _commands() -> list[tuple[str, int, str]]:
    """(doc, block number, command) for every command of every shell block, continuation
    lines joined, comments and prompts dropped, `a && b` split."""
    out = []
    for doc in DOCS:
        for n, block in enumerate(_BLOCK.findall(doc.read_text())):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s)#.*", "", line).strip().removeprefix("$ ")
                out += [(doc.name, n, part.strip()) for part in line.split("&&") if part.strip()]
    return out


COMMANDS = _commands()


def _filled(command: str) -> str:
    for name, value in PLACEHOLDERS.items():
        command = command.replace(name, value)
    return command


def _tokens(command: str) -> list[str]:
    """The words of a command, up to a pipe or `;` (what follows is another command)."""
    tokens = shlex.split(_filled(command))
    ends = [i for i, t in enumerate(tokens) if t in ("|", ";", "||")]
    return tokens[: ends[0]] if ends else tokens


def _python_m(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(module, its arguments) of a `python -m MODULE ...` command of ours."""
    for i, tok in enumerate(tokens[:-1]):
        if tok.endswith(("python", "python3")) and tokens[i + 1] == "-m" and i + 2 < len(tokens):
            module = tokens[i + 2]
            if module.startswith(OURS):
                return module, tokens[i + 3 :]
    return None


@functools.cache
def _help(module: str, sub: str | None) -> str:
    argv = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    return proc.stdout + proc.stderr


_PY = [c for c in COMMANDS if _python_m(_tokens(c[2]))]
_MAKE = [c for c in COMMANDS if _tokens(c[2])[:1] == ["make"]]


def test_the_docs_have_commands():
    assert len(_PY) > 20 and len(_MAKE) > 10  # the extraction found the walk-through


@pytest.mark.parametrize("doc, block, command", _MAKE, ids=[c[2][:60] for c in _MAKE])
def test_make_lines_dry_run(doc, block, command):
    tokens = _tokens(command)
    proc = subprocess.run(
        ["make", "-n", *tokens[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"{doc}: {command}: {proc.stderr[-500:]}"


@pytest.mark.parametrize("doc, block, command", _MAKE, ids=[c[2][:60] for c in _MAKE])
def test_a_pushed_image_is_one_the_block_built(doc, block, command):
    """`make image && make push IMAGE=X` built imdb-train:0.1.0 and pushed X: never built."""
    tokens = _tokens(command)
    if "push" not in tokens:
        return
    image = dict(t.split("=", 1) for t in tokens if "=" in t).get("IMAGE")
    assert image, f"{doc}: {command}: push names no IMAGE"
    if "image" in tokens:
        return  # built and pushed by one make, with one IMAGE
    at = COMMANDS.index((doc, block, command))
    earlier = [_tokens(c) for d, b, c in COMMANDS[:at] if (d, b) == (doc, block)]
    built = {
        t.split("=", 1)[1]
        for toks in earlier
        if {"image", "image-cpu"} & set(toks)
        for t in toks
        if t.startswith(("IMAGE=", "IMAGE_CPU="))
    }
    assert image in built, f"{doc}: {command}: {image} was not built in this block"


@pytest.mark.parametrize("doc, block, command", _PY, ids=[c[2][:60] for c in _PY])
def test_our_commands_know_their_flags(doc, block, command):
    from jobs import _cli

    module, args = _python_m(_tokens(command))
    sub = args[0] if module == "jobs.results" and args and not args[0].startswith("-") else None
    if module == "cluster" or module.startswith("bench"):
        sub = args[0] if args and not args[0].startswith("-") else None
    text = _help(module, sub if module != "cluster" else None)
    for arg in args:
        if arg in ("--help", "-h"):
            continue
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            assert f"--{name}" in text or f"--{name.replace('-', '_')}" in text, (
                f"{doc}: {command}: {module} has no --{name}"
            )
        elif module.startswith("jobs.") and re.fullmatch(r"-[a-z]", arg):
            assert arg in _cli.SHORT_FLAGS, f"{doc}: {command}: {module} has no {arg}"


_SUBMIT = [c for c in _PY if _python_m(_tokens(c[2]))[0] == "jobs.submit"]


@pytest.mark.parametrize("doc, block, command", _SUBMIT, ids=[c[2][:60] for c in _SUBMIT])
def test_submit_lines_dry_run(doc, block, command, capsys, monkeypatch):
    from jobs import submit
    from jobs.spec import EXAMPLE_ACCELERATOR, EXAMPLE_IMAGE, EXAMPLE_OUTPUT

    # What the walk-through sets once for all its commands (IMDB_TRAIN_IMAGE, ...).
    monkeypatch.setenv("IMDB_TRAIN_IMAGE", EXAMPLE_IMAGE)
    monkeypatch.setenv("IMDB_TRAIN_OUTPUT", EXAMPLE_OUTPUT)
    monkeypatch.setenv("IMDB_TRAIN_ACCELERATOR", EXAMPLE_ACCELERATOR)
    _, args = _python_m(_tokens(command))
    args = [a for a in args if a not in ("--wait", "--follow") and not a.startswith("$")]
    code = submit.main(["--dry-run", *args])
    assert code == 0, f"{doc}: {command}: {capsys.readouterr().err[-500:]}"


def test_build_args_are_the_dockerfiles():
    args = set(re.findall(r"^ARG (\w+)", (ROOT / "Dockerfile").read_text(), re.M))
    for doc in DOCS:  # prose and comments too: "add --build-arg X=..." is a command to run
        for name in re.findall(r"--build-arg[ =]'?(\w+)=", doc.read_text()):
            assert name in args, f"{doc.name}: --build-arg {name}: the Dockerfile has no such ARG"


def test_the_walk_through_grants_the_nodes_the_pull_role():
    """Projects created since May 2024 do not give the default node service account Editor:
    without the reader role on the repository, every pull is a 403."""
    grants = [
        _tokens(c)
        for d, _, c in COMMANDS
        if d == "kubernetes.md" and "add-iam-policy-binding" in c and "artifacts" in c
    ]
    assert any(
        "roles/artifactregistry.reader" in toks
        and any(t.endswith("-compute@developer.gserviceaccount.com") for t in toks)
        for toks in grants
    ), grants
