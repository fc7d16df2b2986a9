"""The project's import graph, read from the source with ``ast`` (nothing is imported): which
``pipeline`` modules each module imports, at the top or inside a function."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"


def module_file(module: str) -> Path | None:
    """``pipeline.data.io`` -> ``pipeline/data/io.py`` (or the package's ``__init__.py``)."""
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


@cache
def imports_of(module: str) -> frozenset[tuple[str, bool]]:
    """``{(imported pipeline module, at top level)}`` of ``module``."""
    path = module_file(module)
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # "from pipeline import rle" imports the module pipeline.rle
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("pipeline") and module_file(name) is not None:
                found.add((name, id(node) in top))
    return frozenset(found)


def closure(module: str) -> set[str]:
    """Every pipeline module ``module`` needs, itself and its packages' ``__init__`` included."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += [m for m, _ in imports_of(name)]
    return seen
