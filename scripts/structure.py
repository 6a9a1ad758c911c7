"""The package's shape in a few lines: the tallest import chain inside each package, the
longest modules and classes. `python scripts/structure.py [trainer jobs cluster]`.

An import counts wherever it stands (module level or inside a function): a lazy import is
still a dependency a reader follows. Chains are the longest paths through the import graph
of one package; a cycle, if any, is reported instead of followed.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: annotations, never imported at run time."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def _imports(tree: ast.AST, package: str, known: set[str]) -> set[str]:
    found: set[str] = set()
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == package and name in known:
                found.add(name)
    return found


def survey(package: str) -> dict:
    files = sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(p): p for p in files}
    known = set(modules)
    trees = {m: ast.parse(p.read_text()) for m, p in modules.items()}
    graph = {m: _imports(t, package, known) - {m} for m, t in trees.items()}
    # A package's __init__ re-exporting its modules is not a step of a chain.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    cycles: list[list[str]] = []

    @cache
    def longest(m: str, path: tuple[str, ...] = ()) -> tuple[str, ...]:
        best: tuple[str, ...] = (m,)
        for dep in sorted(graph[m]):
            if dep in path or dep == m:
                cycles.append([*path, m, dep])
                continue
            chain = (m, *longest(dep, (*path, m)))
            if len(chain) > len(best):
                best = chain
        return best

    chains = [longest(m) for m in sorted(graph)]
    tallest = max(chains, key=len)
    lengths = sorted(
        ((len(p.read_text().splitlines()), m) for m, p in modules.items()), reverse=True
    )
    classes = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = sum(
                    isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body
                )
                classes.append((node.end_lineno - node.lineno + 1, f"{m}.{node.name}", methods))
    classes.sort(reverse=True)
    return {"tallest": tallest, "modules": lengths, "classes": classes, "cycles": cycles}


def main(argv: list[str]) -> int:
    for package in argv or ["trainer", "jobs"]:
        s = survey(package)
        print(f"== {package} ==")
        print(f"tallest import chain ({len(s['tallest'])}): {' -> '.join(s['tallest'])}")
        print("longest modules: " + ", ".join(f"{m} {n}" for n, m in s["modules"][:4]))
        print(
            "longest classes: "
            + ", ".join(f"{name} {n} lines/{k} methods" for n, name, k in s["classes"][:3])
        )
        if s["cycles"]:
            print(f"import cycles: {len(s['cycles'])}, e.g. {' -> '.join(s['cycles'][0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
