"""Make a folder a valid Carvana dataset in Kaggle layout (what ``python -m pipeline.data``
runs).

``demo`` generates synthetic cars (skipped when the data root already holds a complete demo made
with the same settings); ``kaggle`` downloads and unzips the competition files; a directory is
validated and the data root becomes a folder of links to its entries (``train/``,
``train_masks/``, the CSVs...), so later stages just read ``data.root``. Every source ends
with a validation of the data root and a one-line summary.

The data root is a real folder of links, never a link itself: ``dvc repro`` removes a stage's
outputs before re-running it, and its removal of a symlink to a folder chmods that folder (the
user's data) to 777. Removing a folder of links only unlinks them; nothing in the source
folder is ever changed, moved or deleted.
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


SOURCE_NOTE = ".source"  # in a folder of links: the folder they point into


def is_link_folder(path: Path) -> bool:
    """Whether ``path`` is a folder made by :func:`link` (only links and its note)."""
    return (path.is_dir() and not path.is_symlink() and (path / SOURCE_NOTE).is_file()
            and all(p.is_symlink() or p.name == SOURCE_NOTE for p in path.iterdir()))


def remove_links(path: Path) -> None:
    """Remove a folder of links: each link is unlinked (never followed), then the folder."""
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()


def link(out: Path, target: Path, echo: Callable[[str], None] = print) -> None:
    """Make ``out`` a folder holding a link to each entry of ``target``, replacing an older
    folder of links, an old single link or an old demo folder; nothing in ``target`` changes."""
    target = target.resolve()
    if out.is_symlink():  # the layout of earlier versions: unlinked, never followed
        out.unlink()
    elif out.exists():
        if is_link_folder(out):
            remove_links(out)
        elif out.is_dir() and demo_mod.read_stamp(out) is not None:
            echo(f"{out}: replacing the generated demo data with links to {target}")
            shutil.rmtree(out)
        elif out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise PipelineError(
                f"{out}: already exists and holds other files; remove it or choose another "
                "--data-root (it will become a folder of links to the data folder)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.link")
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.is_dir():
        remove_links(tmp)
    tmp.mkdir()
    for entry in sorted(target.iterdir()):
        if not entry.name.startswith("."):
            os.symlink(entry, tmp / entry.name, target_is_directory=entry.is_dir())
    (tmp / SOURCE_NOTE).write_text(f"{target}\n")
    os.replace(tmp, out)  # the new folder appears whole under its name


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
        elif is_link_folder(out):
            echo(f"{out}: removing the links to {(out / SOURCE_NOTE).read_text().strip()} to "
                 "generate the demo here")
            remove_links(out)
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
        echo(f"{out}/ -> links to {folder.resolve()}/")
    # the link's target was just decoded file by file: list it again, decode nothing twice
    return check(out, check_sizes=False, echo=None)
