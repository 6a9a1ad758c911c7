"""The packages' layering: the trainer (the container's entrypoint) knows nothing of its
client, jobs/; each error says its own exit code, so no table has to name jobs' errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module an import in the file names, wherever the import stands (a lazy one
    inside a function too), and every dotted string that names a module of jobs/."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Constant) and str(node.value).startswith("jobs."):
            names.add(node.value)  # importlib.import_module("jobs.x"), a table of dotted names
    return names


def test_the_trainer_imports_nothing_of_jobs():
    found = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m == "jobs" or m.startswith("jobs.")
        )
        for path in sorted((ROOT / "trainer").rglob("*.py"))
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_check_sees_a_lazy_import_and_a_dotted_name(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('def f():\n    from jobs.spec import SpecError\nNAME = "jobs._cli.X"\n')
    assert {"jobs.spec", "jobs._cli.X"} <= imported_modules(source)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("jobs.spec.SpecError", 2),
        ("jobs.apierrors.ClusterError", 1),
        ("jobs.apierrors.ClusterNotFoundError", 1),
        ("jobs.apierrors.NotKubernetesError", 1),
        ("jobs._cli.CommandFailedError", 1),
    ],
)
def test_the_clients_errors_say_their_own_exit_code(name, code):
    import importlib

    from trainer import commandline, contract

    module, _, cls = name.rpartition(".")
    error = getattr(importlib.import_module(module), cls)
    assert issubclass(error, contract.KnownError)
    assert commandline.outcome(error("x")) == (code, "error: x")
