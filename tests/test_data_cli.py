"""The data stage (`python -m pipeline.data`) and the Kaggle download, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.data import kaggle
from pipeline.data.__main__ import app
from pipeline.data.demo import STAMP
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


def test_directory_source_creates_a_symlink(tiny_data, tmp_path):
    out = tmp_path / "data" / "carvana"
    result = invoke("--source", tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_symlink() and out.resolve() == tiny_data.resolve()
    assert "64 train images of 4 cars, 32 test images, 64x96" in result.output
    # pointing it elsewhere replaces the link; the data it pointed at is untouched
    other = tmp_path / "other"
    other.symlink_to(tiny_data, target_is_directory=True)
    again = invoke("--source", other, "--out", out)
    assert again.exit_code == 0, again.output
    assert out.is_symlink() and len(list((tiny_data / "train").iterdir())) == 64


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


# --------------------------------------------------------------------------- kaggle


def test_kaggle_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "installed", lambda: False)
    result = invoke("--source", "kaggle", "--out", tmp_path / "k")
    assert result.exit_code == 1
    assert "pip install 'carvana-pipeline[kaggle]'" in _one_error_line(result)


def test_kaggle_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle, "installed", lambda: True)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: False)
    with pytest.raises(PipelineError, match="kaggle.json.*KAGGLE_USERNAME"):
        kaggle.download(tmp_path)


def test_credentials_found(tmp_path):
    assert not kaggle.credentials_found(env={}, home=tmp_path)
    assert kaggle.credentials_found(env={"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home=tmp_path)
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{}")
    assert kaggle.credentials_found(env={}, home=tmp_path)


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


ARCHIVES = {
    "train.zip": {"train/0123456789ab_01.jpg": b"jpg"},
    "train_masks.zip": {"train_masks/0123456789ab_01_mask.gif": b"gif"},
    "train_masks.csv.zip": {"train_masks.csv": b"img,rle_mask\n"},
    "metadata.csv.zip": {"metadata.csv": b"id\n"},
    "sample_submission.csv.zip": {"sample_submission.csv": b"img,rle_mask\n"},
    "test.zip": {"test/0123456789ab_02.jpg": b"jpg"},
}


@pytest.fixture
def fake_kaggle(monkeypatch):
    """A stand-in ``kaggle`` package whose API writes small zips (or raises ``error``)."""
    calls: list[str] = []
    state = {"error": None}

    class KaggleApi:
        def authenticate(self):
            pass

        def competition_download_file(self, competition, file_name, path=None, quiet=False):
            calls.append(file_name)
            if state["error"] is not None:
                raise state["error"]
            _zip(Path(path) / file_name, ARCHIVES[file_name])

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = KaggleApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    monkeypatch.setattr(kaggle, "credentials_found", lambda: True)
    return types.SimpleNamespace(calls=calls, state=state)


def test_kaggle_download_unzips_into_kaggle_layout(tmp_path, fake_kaggle):
    root = kaggle.download(tmp_path / "k", echo=None)
    assert (root / "train" / "0123456789ab_01.jpg").read_bytes() == b"jpg"
    assert (root / "train_masks" / "0123456789ab_01_mask.gif").is_file()
    for csv in ("train_masks.csv", "metadata.csv", "sample_submission.csv"):
        assert (root / csv).is_file()
    assert not list(root.glob("*.zip"))  # zips are removed once extracted
    assert not (root / "test").exists()  # test.zip only on request
    assert fake_kaggle.calls == list(kaggle.TRAIN_FILES)

    kaggle.download(root, include_test=True, echo=None)  # resumes: only the new file
    assert fake_kaggle.calls == [*kaggle.TRAIN_FILES, "test.zip"]
    assert (root / "test" / "0123456789ab_02.jpg").is_file()


class _HTTPError(Exception):
    def __init__(self, status: int):
        super().__init__(f"({status}) Reason: refused")
        self.status = status


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionError("Max retries exceeded"), "cannot reach kaggle.com"),
        (_HTTPError(403), "accept the competition rules"),
        (_HTTPError(404), "check the competition name"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_kaggle_download_errors_are_one_line(tmp_path, fake_kaggle, error, expected):
    fake_kaggle.state["error"] = error
    with pytest.raises(PipelineError) as info:
        kaggle.download(tmp_path / "k", echo=None)
    assert expected in str(info.value) and "train.zip" in str(info.value)
    assert "\n" not in str(info.value)


def test_kaggle_refuses_zip_members_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    _zip(archive, {"../outside.txt": b"x"})
    with pytest.raises(PipelineError, match="outside the data folder"):
        kaggle.extract(archive, tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(PipelineError, match="not a valid zip"):
        kaggle.extract(tmp_path / "broken.zip", tmp_path / "root")


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
