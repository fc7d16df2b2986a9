"""Make a folder a valid Carvana dataset in Kaggle layout (what ``python -m pipeline.data``
runs).

``demo`` generates synthetic cars (skipped when ``--out`` already holds a complete demo made with
the same settings); ``kaggle`` downloads and unzips the competition files; a directory is
validated and ``--out`` becomes a symlink to it, so later stages just read ``data.root``.
Every source ends with a validation of ``--out`` and a one-line summary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline import kaggle
from pipeline.config import FULL_HEIGHT, FULL_WIDTH, DataConfig
from pipeline.data import demo as demo_mod
from pipeline.data.validate import Summary, check
from pipeline.errors import PipelineError

FULL_SIZE = (FULL_HEIGHT, FULL_WIDTH)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _expected_size(folder: Path) -> tuple[int, int]:
    """Image size a folder must have: its demo settings when it is a demo, else Kaggle's."""
    stamp = demo_mod.read_stamp(folder)
    if stamp and "demo" in stamp:
        return stamp["demo"]["height"], stamp["demo"]["width"]
    return FULL_SIZE


def link(out: Path, target: Path, echo: Callable[[str], None] = print) -> None:
    """Make ``out`` a symlink to ``target``, replacing an older link or an old demo folder."""
    if out.is_symlink():
        out.unlink()
    elif out.exists():
        if out.is_dir() and demo_mod.read_stamp(out) is not None:
            echo(f"{out}: replacing the generated demo data with a link to {target}")
            shutil.rmtree(out)
        elif out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise PipelineError(
                f"{out}: already exists and holds other files; remove it or choose another "
                "--out (it will become a symlink to the data folder)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target.resolve(), tmp, target_is_directory=True)
    os.replace(tmp, out)  # atomic: out is the old state or the new link, never missing


def prepare(
    data: DataConfig,
    source: str | None = None,
    out: str | Path | None = None,
    include_test: bool = False,
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Summary:
    """Make ``out`` (default ``data.root``) a valid dataset from ``source`` (default
    ``data.source``: demo | kaggle | a directory); return the validation summary."""
    source = source or data.source
    out = Path(out or data.root)
    if source == "demo":
        if out.is_symlink():
            echo(f"{out}: removing the link to {os.readlink(out)} to generate the demo here")
            out.unlink()
        if not force and demo_mod.is_current(out, data.demo):
            echo(f"{out}: demo data is up to date (delete {out / demo_mod.STAMP} to rebuild)")
        else:
            echo(f"{out}: generating demo data ({data.demo})")
            demo_mod.generate_demo(out, data.demo, progress=progress)
        return check(out, expected=(data.demo.height, data.demo.width), echo=echo,
                     progress=progress)
    if source == "kaggle":
        kaggle.download(out, include_test=include_test, echo=echo)
        return check(out, expected=FULL_SIZE, echo=echo, progress=progress)
    folder = Path(source)
    if not folder.is_dir():
        raise PipelineError(
            f"--source {source}: not 'demo', 'kaggle' or an existing folder in Kaggle layout"
        )
    check(folder, expected=_expected_size(folder), echo=echo, progress=progress)
    if not _same(folder, out):
        link(out, folder, echo=echo)
        echo(f"{out} -> {folder.resolve()}")
    # the link's target was just decoded file by file: list it again, decode nothing twice
    return check(out, check_sizes=False, echo=None)
