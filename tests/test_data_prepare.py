"""The data stage (`python -m pipeline.data`) and its core, pipeline.data.prepare: the demo,
a linked folder in Kaggle layout, and one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import DataConfig, DemoConfig, default
from pipeline.data.__main__ import app
from pipeline.data.demo import STAMP
from pipeline.data.prepare import link, prepare
from pipeline.errors import PipelineError

TINY = ["data.demo.height=64", "data.demo.width=96", "data.demo.test_cars=1"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_demo_generation_then_up_to_date_then_regenerated(tmp_path):
    out = tmp_path / "demo"
    result = invoke(
        "--source", "demo", "--out", out, "--no-progress", "data.demo.train_cars=2", *TINY
    )
    assert result.exit_code == 0, result.output
    assert (out / STAMP).is_file()
    assert len(list((out / "train").glob("*.jpg"))) == 32
    summary = result.output.strip().splitlines()[-1]
    assert "32 train images of 2 cars, 16 test images, 64x96" in summary

    first = (out / "train_masks.csv").stat().st_mtime_ns
    again = invoke("--out", out, "--no-progress", "data.demo.train_cars=2", *TINY)
    assert again.exit_code == 0 and "up to date" in again.output
    assert (out / "train_masks.csv").stat().st_mtime_ns == first  # nothing rewritten

    changed = invoke("--out", out, "--no-progress", "data.demo.train_cars=1", *TINY)
    assert changed.exit_code == 0, changed.output
    assert "generating" in changed.output
    assert len(list((out / "train").glob("*.jpg"))) == 16


def links_to(out: Path, target: Path) -> bool:
    """``out`` is a real folder whose entries link into ``target`` (never a link itself)."""
    return (not out.is_symlink() and out.is_dir()
            and (out / "train").resolve() == (target / "train").resolve()
            and all(p.is_symlink() for p in out.iterdir() if p.name != ".source"))


def test_directory_source_creates_a_folder_of_links(tiny_data, tmp_path):
    out = tmp_path / "data" / "carvana"
    result = invoke("--source", tiny_data, "--data-root", out)
    assert result.exit_code == 0, result.output
    assert links_to(out, tiny_data)
    assert "64 train images of 4 cars, 32 test images, 64x96" in result.output
    # pointing it elsewhere replaces the links; the data they pointed at is untouched
    other = tmp_path / "other"
    other.symlink_to(tiny_data, target_is_directory=True)
    again = invoke("--source", other, "--out", out)  # --out: the older name of --data-root
    assert again.exit_code == 0, again.output
    assert links_to(out, tiny_data) and len(list((tiny_data / "train").iterdir())) == 64


def test_directory_source_equal_to_out_is_only_validated(tiny_data):
    result = invoke("--source", tiny_data, "--out", tiny_data)
    assert result.exit_code == 0, result.output
    assert not Path(tiny_data).is_symlink()


def test_directory_source_refuses_to_replace_other_files(tiny_data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = invoke("--source", tiny_data, "--out", out)
    assert result.exit_code == 1
    assert "already exists" in _one_error_line(result)
    assert (out / "notes.txt").read_text() == "keep me"


def test_bad_directory_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    result = invoke("--source", bad, "--out", tmp_path / "out")
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert str(bad / "train") in line and "no <car>_<NN>.jpg" in line
    assert not (tmp_path / "out").exists()

    missing = invoke("--source", tmp_path / "nowhere")
    assert missing.exit_code == 1
    assert "not 'demo', 'kaggle' or an existing folder" in _one_error_line(missing)


def test_unknown_override_is_a_one_line_error(tmp_path):
    result = invoke("--out", tmp_path / "x", "data.demo.train_car=3")
    assert result.exit_code == 1
    assert "data.demo.train_car" in _one_error_line(result)


def test_stage_runs_as_a_module(tmp_path):
    """`python -m pipeline.data --help` works (the entry point the README and dvc.yaml use)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.data", "--help"],
        check=False,
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--source" in proc.stdout


# --------------------------------------------------------------------------- the core


def test_prepare_links_a_folder_and_returns_its_summary(tiny_data, tmp_path):
    lines: list[str] = []
    out = tmp_path / "root"
    summary = prepare(default(DataConfig, root=str(out)), source=str(tiny_data),
                      echo=lines.append)
    assert links_to(out, tiny_data)
    assert (summary.train_images, summary.train_cars, summary.test_images) == (64, 4, 32)
    assert summary.size == (64, 96)
    assert lines[-1] == f"{out}/ -> links to {tiny_data.resolve()}/"


@pytest.mark.parametrize("layout", ["folder of links", "single link (older versions)"])
def test_prepare_demo_replaces_links_with_generated_data(tiny_data, tmp_path, layout):
    out = tmp_path / "root"
    if layout == "folder of links":
        link(out, tiny_data, echo=lambda _: None)
    else:
        out.symlink_to(tiny_data, target_is_directory=True)
    demo = default(DemoConfig, train_cars=1, test_cars=1, height=64, width=96)
    lines: list[str] = []
    summary = prepare(default(DataConfig, root=str(out), demo=demo), source="demo", progress=False,
                      echo=lines.append)
    assert not out.is_symlink() and (out / STAMP).is_file()
    assert summary.train_images == 16 and summary.test_images == 16
    assert "removing the link" in lines[0]
    assert (out / "train").is_dir() and not (out / "train").is_symlink()
    assert len(list((tiny_data / "train").iterdir())) == 64  # the linked data is untouched


def test_link_replaces_an_empty_folder_and_a_demo_but_not_other_files(tiny_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    link(empty, tiny_data, echo=lambda _: None)
    assert links_to(empty, tiny_data)
    link(empty, tiny_data, echo=lambda _: None)  # an older folder of links is replaced
    assert links_to(empty, tiny_data)

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / STAMP).write_text("{}")
    lines: list[str] = []
    link(demo, tiny_data, echo=lines.append)
    assert links_to(demo, tiny_data) and "replacing the generated demo data" in lines[0]

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(PipelineError, match="already exists and holds other files"):
        link(other, tiny_data)
    assert (other / "keep.txt").read_text() == "x"
    assert not list(tmp_path.glob(".*.link"))  # no temporary folder left behind


def test_replacing_links_never_touches_the_source(tiny_data, tmp_path):
    """The source's files and modes are what they were after linking, relinking, replacing
    with a demo and removing the links (what a re-run of the data stage does)."""
    source = tmp_path / "source"
    shutil.copytree(tiny_data, source)
    source.chmod(0o755)
    before = modes(source)
    out = tmp_path / "root"
    link(out, source, echo=lambda _: None)
    link(out, source, echo=lambda _: None)
    prepare(default(DataConfig, root=str(out), demo=default(
        DemoConfig, train_cars=1, test_cars=1, height=64, width=96)), source="demo",
        progress=False, echo=lambda _: None)
    assert modes(source) == before


def modes(root: Path) -> dict:
    """Every path under ``root`` (itself included) with its mode and size."""
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size)
            for p in [root, *sorted(root.rglob("*"))]}
