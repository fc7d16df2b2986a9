"""The scripts that prepare and run the GPU session (scripts/copy_cars.py, scripts/gpu_run.sh),
run here on the CPU so that a GPU session never spends its minutes on a script's bug."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.config import DemoConfig, default
from pipeline.data.demo import generate_demo
from pipeline.data.layout import train_index
from pipeline.data.validate import validate

REPO = Path(__file__).resolve().parents[1]
TINY = (64, 96)


def _copy_cars():
    spec = importlib.util.spec_from_file_location("copy_cars", REPO / "scripts" / "copy_cars.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image_bytes(root: Path) -> int:
    """The JPEG and GIF bytes under ``root`` (all that copy_cars counts but the CSV rows)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.suffix in (".jpg", ".gif"))


def test_copy_cars_copies_whole_cars_in_order_as_a_valid_layout(tiny_data, tmp_path):
    dst = tmp_path / "subset"
    cars = _copy_cars().copy_cars(tiny_data, dst, 2, 10**9)
    every = sorted(train_index(tiny_data)["car_id"].unique())
    assert cars == every[:2]
    assert validate(dst, expected=TINY) == []  # the project's own checks of a Kaggle folder
    index = train_index(dst)
    assert sorted(index["car_id"].unique()) == cars and len(index) == 32  # 16 angles each
    masks = pd.read_csv(dst / "train_masks.csv")
    original = pd.read_csv(tiny_data / "train_masks.csv").set_index("img")
    assert set(masks["img"].str[:12]) == set(cars)
    assert (masks.set_index("img")["rle_mask"] == original.loc[masks["img"], "rle_mask"]).all()
    tests = sorted(p.name for p in (tiny_data / "test").glob("*.jpg"))
    assert sorted(p.name for p in (dst / "test").glob("*.jpg")) == tests
    assert pd.read_csv(dst / "sample_submission.csv")["img"].tolist() == tests
    meta = pd.read_csv(dst / "metadata.csv", dtype=str)
    assert set(meta["id"]) == set(cars) | {t[:12] for t in tests}
    for name in index["img"]:  # the bytes themselves, not re-encoded
        assert (dst / "train" / name).read_bytes() == (tiny_data / "train" / name).read_bytes()


def test_copy_cars_stops_at_the_byte_budget(tiny_data, tmp_path, monkeypatch):
    module = _copy_cars()
    monkeypatch.setattr(module, "MIN_CARS", 2)  # the tiny data has 4 cars, not the real 10+
    full = tmp_path / "full"
    module.copy_cars(tiny_data, full, 4, 10**9)
    budget = _image_bytes(full) - 1  # one byte short of the 4 cars' files and the test images
    cut = tmp_path / "cut"
    cars = module.copy_cars(tiny_data, cut, 4, budget)
    assert len(cars) == 3
    assert _image_bytes(cut) <= budget


def test_copy_cars_too_small_a_budget_fails_in_one_line(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match=r"^only 0 cars fit in 0\.0 MiB; ask for fewer"):
        _copy_cars().copy_cars(tiny_data, tmp_path / "none", 2, 1)


def _gpu_run(*args: str, env: dict[str, str], timeout: int = 300):
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args], check=False,
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_without_a_command_prints_its_usage(tmp_path):
    result = _gpu_run(env={})
    assert result.returncode == 2 and "scripts/gpu_run.sh prepare [CARS]" in result.stdout
    unknown = _gpu_run("run", "train", env={"SKIP_INSTALL": "1", "OUT": str(tmp_path)})
    assert unknown.returncode == 2
    assert unknown.stderr == "run what? bench, accuracy, predict or all\n"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_predict_writes_one_benchmark_per_settings_line(tmp_path):
    """``run predict`` as the GPU session calls it, at 64x96 on the CPU: one ``benchmark gpu``
    per line of PREDICT_SETTINGS, each line's overrides reaching the run."""
    out = tmp_path / "out"
    settings = "predict.compile=false\npredict.compile=false predict.overlap=false"
    env = {"SKIP_INSTALL": "1", "PYTHON": sys.executable, "OUT": str(out), "HEIGHT": "64",
           "WIDTH": "96", "PREDICT_SETTINGS": settings, "NO_ALBUMENTATIONS_UPDATE": "1",
           "BENCH_ARGS": "--device cpu --images 2 --batch-size 2 --ensemble 1"}
    result = _gpu_run("run", "predict", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "== predict 1: predict.compile=false\n" in result.stdout
    assert "== predict 2: predict.compile=false predict.overlap=false\n" in result.stdout
    reports = [json.loads((out / f"predict_{i}.json").read_text()) for i in (1, 2)]
    for report, line in zip(reports, settings.splitlines()):
        assert report["command"].endswith(line)  # the line's overrides reached the run
        assert report["plan"]["sizes"] == [[64, 96]] and report["plan"]["steps"] == 3  # --quick
        assert {row["model"] for row in report["training"]} == {"smp_unet_resnet34"}
        assert report["prediction"]["input_size"] == [64, 96]
    first, second = (report["prediction"]["results"] for report in reports)
    assert first[0]["overlap"] and not second[0]["overlap"]  # predict.overlap, as set
    assert {row["overlap"] for row in first} == {True, False}  # and the other way, compared
    assert (out / "predict_2.md").is_file() and (out / "predict_2.log").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_refuses_an_unknown_profile(tmp_path):
    result = _gpu_run("run", "accuracy", env={"SKIP_INSTALL": "1", "OUT": str(tmp_path),
                                              "PROFILE": "gpu_nonesuch"})
    assert result.returncode == 2
    assert result.stderr == "configs/profiles/gpu_nonesuch.yaml: no such profile (PROFILE)\n"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_accuracy_trains_the_recipe_and_scores_the_held_out_cars(tmp_path):
    """``run accuracy`` with PROFILE=gpu_recipe, as a GPU session would call it, on 8 generated
    cars at 64x96 (crops 32x64) for 6 seconds: folds holding ~5 cars out (here 2 folds of 4),
    the recipe trained on fold 0's complement, then scored out of fold on its cars."""
    data = tmp_path / "cars"
    generate_demo(data, default(DemoConfig, train_cars=8, test_cars=1, seed=0, height=64, width=96))
    out, work = tmp_path / "out", tmp_path / "work"
    shrink = ("train.height=64 train.width=96 train.crop=[32,64] train.num_workers=0 "
              "predict.num_workers=0 predict.compile=false train.precision=fp32 "
              f"predict.precision=fp32 data.cache_dir={tmp_path / 'cache'}")
    env = {"SKIP_INSTALL": "1", "PYTHON": sys.executable, "OUT": str(out), "WORK": str(work),
           "DATA_ROOT": str(data), "PROFILE": "gpu_recipe", "TRAIN_MINUTES": "0.1",
           "TRAIN_ARGS": shrink, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = _gpu_run("run", "accuracy", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    folds = pd.read_csv(out / "folds.csv")
    assert folds.groupby("fold")["car_id"].nunique().to_dict() == {0: 4, 1: 4}
    best = torch.load(work / "checkpoints" / "smp_unet_resnet34" / "fold0" / "best.pt",
                      map_location="cpu", weights_only=False)
    train = best["config"]["train"]  # the profile's recipe, shrunk by TRAIN_ARGS
    assert (train["loss"], train["ema"], train["crop"]) == ("boundary_bce_dice", 0.999, [32, 64])
    assert train["time_budget_min"] == 0.1
    cv = json.loads((out / "cv.json").read_text())
    held_out = folds.loc[folds["fold"] == 0, "img"]
    assert cv["mode"] == "oof" and cv["images"] == len(held_out) == 64
    assert list(cv["folds"]) == ["0"] and 0.0 < cv["dice"] <= 1.0
    assert (out / "train.log").is_file() and (out / "evaluate.log").is_file()
