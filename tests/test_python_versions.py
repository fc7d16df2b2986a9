"""The code runs on every Python that pyproject.toml's ``requires-python`` admits. CI runs one
interpreter; vermin reads the source (nothing is imported) and names any standard-library module,
member or syntax newer than the oldest admitted version (``typing.Self`` and ``tomllib`` are 3.11)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from import_graph import REPO

SOURCES = ["pipeline", "tests", "scripts"]


def oldest_python() -> str:
    """``requires-python = ">=3.10"`` -> ``"3.10"`` (a regex: ``tomllib`` itself is 3.11+)."""
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'^requires-python\s*=\s*">=\s*(\d+\.\d+)"', text, re.MULTILINE)
    assert found, "pyproject.toml: no requires-python = \">=X.Y\""
    return found.group(1)


def vermin(paths: list[Path | str], target: str) -> subprocess.CompletedProcess[str]:
    """Run vermin with ``target`` as the oldest version: exit status 0 only if every file runs
    there. Imports under ``TYPE_CHECKING`` count too (take ``Self`` from ``typing_extensions``),
    and ``# novermin`` comments are ignored, so nothing silences the check."""
    run_vermin = "import sys; from vermin import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    cmd = [sys.executable, "-c", run_vermin, f"-t={target}-", "--violations", "--no-tips",
           "--eval-annotations", "--no-parse-comments", *map(str, paths)]
    return subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_oldest_python_is_read_from_pyproject():
    assert re.fullmatch(r"3\.\d+", oldest_python())


def test_source_runs_on_the_oldest_python_declared():
    target = oldest_python()
    result = vermin(SOURCES, target)
    assert result.returncode == 0, (
        f"code that needs a Python newer than {target} (pyproject.toml requires-python):\n"
        f"{result.stdout}{result.stderr}")


@pytest.mark.parametrize("code, needs, version", [
    ("from typing import Self\n", "typing.Self", "3.11"),
    ("import tomllib\n", "tomllib", "3.11"),
    ("import asyncio\n\nasync def f():\n    async with asyncio.TaskGroup():\n        pass\n",
     "asyncio.TaskGroup", "3.11"),
    ("try:\n    pass\nexcept* ValueError:\n    pass\n", "except*", "3.11"),
    ("type Mask = list[int]\n", "type", "3.12"),
])
def test_the_check_names_a_newer_api(tmp_path, code, needs, version):
    source = tmp_path / "newer.py"
    source.write_text(code)
    result = vermin([source], "3.10")
    assert result.returncode != 0
    assert "newer.py" in result.stdout and needs in result.stdout
    assert f"Minimum required versions: {version}" in result.stdout


def test_the_check_passes_what_310_has(tmp_path):
    source = tmp_path / "fine.py"
    source.write_text("from typing import TypeAlias\nx: int | None = None\n"
                      "match x:\n    case None:\n        pass\n")
    assert vermin([source], "3.10").returncode == 0
