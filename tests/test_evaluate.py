"""Out-of-fold evaluation: each fold scored by its own model, Dice checked against closed-form
answers, the summary, the report files, fold-level resume, the CLI and torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pipeline.config import Config, FoldsConfig, ModelConfig
from pipeline.data.io import read_mask
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.evaluate import (
    app,
    evaluate_all_images,
    evaluate_oof,
    summarize_dice,
    write_report,
)
from pipeline.folds import make_folds, write_folds
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["predict.num_workers=0", "predict.batch_size=4", "predict.precision=fp32",
             "model.name=tiny"]


def make_cfg() -> Config:
    cfg = Config()
    return dataclasses.replace(
        cfg,
        model=ModelConfig(arch="unet", base_width=4, depth=2, name="tiny"),
        train=dataclasses.replace(cfg.train, height=32, width=48),
        predict=dataclasses.replace(cfg.predict, num_workers=0, batch_size=4, precision="fp32"),
    )


def constant_model(cfg: Config, logit: float):
    """A U-Net whose head outputs ``logit`` everywhere: all car (> 0) or no car (< 0)."""
    model = build_model(cfg.model)
    with torch.no_grad():
        model.outc.conv.weight.zero_()
        model.outc.conv.bias.fill_(logit)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data):
    """folds.csv with 2 folds; fold 0's model says "no car" everywhere, fold 1's "all car"."""
    root = tmp_path_factory.mktemp("eval")
    folds = make_folds(train_index(tiny_data), FoldsConfig(n_folds=2, stratify="none"))
    write_folds(folds, root / "folds.csv")
    cfg = make_cfg()
    save_checkpoint(root / "ck" / "tiny" / "fold0" / "best.pt", constant_model(cfg, -30.0), cfg)
    save_checkpoint(root / "ck" / "tiny" / "fold1" / "best.pt", constant_model(cfg, 30.0), cfg)
    torch.manual_seed(0)
    save_checkpoint(root / "rand" / "tiny" / "fold0" / "best.pt", build_model(cfg.model), cfg)
    return {"root": root, "data": tiny_data, "folds": folds}


def all_car_dice(mask_path: str) -> float:
    """Dice of an all-car prediction: 2 |T| / (|T| + H * W)."""
    truth = read_mask(mask_path)
    return 2 * truth.sum() / (truth.sum() + truth.size)


def test_each_fold_is_scored_by_its_own_model(setup, tmp_path):
    result = evaluate_oof(make_cfg(), setup["data"], setup["root"] / "folds.csv", tmp_path,
                          checkpoints_dir=setup["root"] / "ck", progress=False)
    scores = result.scores
    folds = setup["folds"].set_index("img")["fold"]
    assert len(scores) == 64 and scores["img"].is_unique
    assert (scores["fold"].to_numpy() == folds.loc[scores["img"]].to_numpy()).all()
    index = train_index(setup["data"]).set_index("img")
    for row in scores.itertuples():
        if row.fold == 0:  # "no car" against a car: Dice 0, nothing predicted
            assert row.dice == 0 and row.pred_px == 0 and row.true_px > 0
        else:
            assert row.pred_px == 64 * 96 and row.inter_px == row.true_px
            assert row.dice == pytest.approx(all_car_dice(index.loc[row.img, "mask_path"]))
    s = result.summary
    assert s["images"] == 64 and s["dice"] == pytest.approx(scores["dice"].mean())
    assert s["folds"]["0"]["dice"] == 0 and s["folds"]["1"]["dice"] > 0
    assert sorted(s["angles"]) == [f"{a:02d}" for a in range(1, 17)]
    assert set(s["makes"]) == set(index["make"])
    assert s["predict"] == {"tta": ["hflip"], "threshold": 0.5, "largest_component": False,
                            "precision": "fp32", "device": "cpu"}
    assert [w.dice for w in result.worst] == sorted(scores["dice"])[:6]


def test_summarize_dice_by_hand():
    frame = pd.DataFrame({"dice": [1.0, 0.5, 0.0, 0.5], "fold": [0, 0, 1, 1],
                          "angle": [1, 2, 1, 2], "make": ["A", "A", "B", "A"],
                          "pred_px": [10, 10, 0, 5], "true_px": [10, 30, 5, 5],
                          "inter_px": [10, 10, 0, 5]})
    s = summarize_dice(frame)
    assert s["dice"] == 0.5 and s["dice_min"] == 0.0 and s["dice_median"] == 0.5
    assert s["dice_std"] == pytest.approx(np.std([1, 0.5, 0, 0.5]))
    assert s["folds"] == {"0": {"dice": 0.75, "std": 0.25, "images": 2},
                          "1": {"dice": 0.25, "std": 0.25, "images": 2}}
    assert s["angles"]["01"]["dice"] == 0.5 and s["makes"]["B"]["dice"] == 0.0
    assert s["precision"] == 25 / 25 and s["recall"] == 25 / 50


def test_finished_folds_are_reused_until_something_changes(setup, tmp_path, monkeypatch):
    cfg = make_cfg()
    args = (setup["data"], setup["root"] / "folds.csv", tmp_path)
    first = evaluate_oof(cfg, *args, checkpoints_dir=setup["root"] / "ck", progress=False)

    def no_model(*a, **k):
        raise AssertionError("a finished fold was predicted again")

    monkeypatch.setattr("pipeline.evaluate.load_ensemble", no_model)
    again = evaluate_oof(cfg, *args, checkpoints_dir=setup["root"] / "ck", progress=False)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    assert [w.img for w in again.worst] == [w.img for w in first.worst]
    other = dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, threshold=0.4))
    with pytest.raises(AssertionError, match="predicted again"):
        evaluate_oof(other, *args, checkpoints_dir=setup["root"] / "ck", progress=False)


def test_all_images_mode_scores_an_ensemble_on_a_labelled_folder(setup):
    ckpt = setup["root"] / "ck" / "tiny" / "fold1" / "best.pt"
    result = evaluate_all_images(make_cfg(), setup["data"], [ckpt], progress=False)
    assert len(result.scores) == 64 and (result.scores["fold"] == -1).all()
    row = result.scores.iloc[5]
    mask = train_index(setup["data"]).set_index("img").loc[row.img, "mask_path"]
    assert row.dice == pytest.approx(all_car_dice(mask))
    assert result.summary["mode"] == "all-images"


def test_report_files(setup, tmp_path):
    result = evaluate_oof(make_cfg(), setup["data"], setup["root"] / "folds.csv", tmp_path,
                          checkpoints_dir=setup["root"] / "rand", worst_k=3, progress=False)
    assert result.summary["skipped_folds"] == [1] and result.summary["images"] == 32
    written = write_report(result, tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names[:4] == ["cv.json", "dice_by_angle.png", "dice_hist.png", "oof_dice.csv"]
    assert len([n for n in names if n.startswith("worst_")]) == 3
    assert names[4].startswith("worst_01_" + Path(result.worst[0].img).stem)
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(tmp_path / "report" / "oof_dice.csv")
    assert list(csv.columns)[:6] == ["img", "car_id", "angle", "make", "fold", "dice"]
    assert json.loads((tmp_path / "report" / "cv.json").read_text())["images"] == 32


def test_overlay_draws_truth_green_and_prediction_red():
    from pipeline.evaluate import PRED, TRUTH, overlay_outlines

    image = np.full((40, 60, 3), 128, np.uint8)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:30, 10:30] = 1
    pred = np.zeros_like(truth)
    pred[5:20, 35:55] = 1
    out = overlay_outlines(image, truth, pred)
    assert tuple(out[10, 20]) == TRUTH and tuple(out[5, 45]) == PRED
    assert tuple(out[20, 20]) == (128, 128, 128)  # inside stays the photo


def run_cli(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def test_cli_out_of_fold_and_errors(setup, tmp_path):
    common = ["--folds", setup["root"] / "folds.csv", "--data-root", setup["data"],
              "--out-dir", tmp_path / "reports"]
    res = run_cli(["--checkpoints", setup["root"] / "ck", *common,
                   "--metrics-out", tmp_path / "m" / "cv.json", *OVERRIDES], tmp_path)
    assert res.exit_code == 0, res.output
    report = tmp_path / "reports" / "tiny"
    assert (report / "oof_dice.csv").is_file() and len(list(report.glob("worst_*.png"))) == 6
    assert json.loads((tmp_path / "m" / "cv.json").read_text()) == \
        json.loads((report / "cv.json").read_text())
    assert "64 images" in res.output
    # --checkpoint outside a fold<K> folder cannot be scored out of fold
    stray = tmp_path / "model.pt"
    stray.write_bytes((setup["root"] / "ck" / "tiny" / "fold1" / "best.pt").read_bytes())
    bad = run_cli(["--checkpoint", stray, *common, *OVERRIDES], tmp_path)
    assert bad.exit_code == 1 and "cannot tell which fold" in bad.output
    # ... but it can score a whole labelled folder
    ok = run_cli(["--checkpoint", stray, "--all-images", *common, *OVERRIDES], tmp_path)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "reports" / "tiny" / Path(setup["data"]).name / "dice.csv").is_file()
    none = run_cli(["--checkpoints", tmp_path / "none", *common, *OVERRIDES], tmp_path)
    assert none.exit_code == 1 and "no fold checkpoints" in none.output


def test_missing_folds_file_is_a_clear_error(setup, tmp_path):
    with pytest.raises(PipelineError, match="folds file not found"):
        evaluate_oof(make_cfg(), setup["data"], tmp_path / "nope.csv", tmp_path,
                     checkpoints_dir=setup["root"] / "ck", progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(setup, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["-m", "pipeline.evaluate", "--checkpoints", str(setup["root"] / "rand"),
            "--folds", str(setup["root"] / "folds.csv"), "--data-root", str(setup["data"]),
            *OVERRIDES]
    for name, launcher in [("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run",
                                    "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                                    "--master_port", str(free_port())])]:
        proc = subprocess.run([*launcher, *args, "--out-dir", str(tmp_path / name),
                               "--metrics-out", str(tmp_path / name / "cv.json")],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = pd.read_csv(tmp_path / "one" / "tiny" / "oof_dice.csv")
    two = pd.read_csv(tmp_path / "two" / "tiny" / "oof_dice.csv")
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 32
