"""Out-of-fold evaluation: each fold scored by its own model (checked against closed-form
Dice), the summary, fold-level resume until something changes, the all-images mode, and a
missing folds file."""

from __future__ import annotations

import dataclasses
import shutil

import pandas as pd
import pytest
import torch
from conftest import tiny_config

from pipeline.config import Config, PredictConfig, RefineConfig, default, result_keys
from pipeline.data.io import read_mask, write_mask_gif
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.evaluate import oof
from pipeline.evaluate.oof import evaluate_all_images, evaluate_oof
from pipeline.folds.splits import load_folds, split, write_folds
from pipeline.inference.engine import load_ensemble, prepare_engine
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.records import to_json
from pipeline.refine.net import EdgeRefiner
from pipeline.refine.store import save_refiner
from pipeline.runs import Roots, refiner_beside


def constant_model(cfg: Config, logit: float):
    """A U-Net whose head outputs ``logit`` everywhere: all car (> 0) or no car (< 0)."""
    model = build_model(cfg.model)
    with torch.no_grad():
        model.outc.conv.weight.zero_()
        model.outc.conv.bias.fill_(logit)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data, tiny_folds, tiny_cache):
    """2 folds; fold 0's model says "no car" everywhere, fold 1's "all car"."""
    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(tiny_data, tiny_cache)
    roots = Roots(checkpoints=root / "ck")
    save_checkpoint(roots.run("tiny", 0).best, constant_model(cfg, -30.0), cfg)
    save_checkpoint(roots.run("tiny", 1).best, constant_model(cfg, 30.0), cfg)
    return {"cfg": cfg, "data": tiny_data, "folds_csv": tiny_folds,
            "folds": load_folds(tiny_folds), "model": roots.model("tiny")}


def all_car_dice(mask_path: str) -> float:
    """Dice of an all-car prediction: 2 |T| / (|T| + H * W)."""
    truth = read_mask(mask_path)
    return 2 * truth.sum() / (truth.sum() + truth.size)


def test_each_fold_is_scored_by_its_own_model(setup, tmp_path):
    result = evaluate_oof(setup["cfg"].predict, setup["data"], setup["folds_csv"], tmp_path,
                          model=setup["model"], progress=False)
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
    assert s.images == 64 and s.dice == pytest.approx(scores["dice"].mean())
    assert s.folds["0"].dice == 0 and s.folds["1"].dice > 0
    assert sorted(s.angles) == [f"{a:02d}" for a in range(1, 17)]
    assert set(s.makes) == set(index["make"])
    assert to_json(s)["predict"] == {
        "tta": ["hflip"], "threshold": 0.5, "largest_component": True, "precision": "fp32",
        "device": "cpu", "refiner": False, "channels_last": True, "compile": False,
        "compile_mode": "default", "decode": "workers"}
    lo, hi = s.dice_ci95  # the mean's 95% interval over cars, and each fold's
    assert lo <= s.dice <= hi and s.folds["1"].ci95[0] <= s.folds["1"].dice
    assert [w.dice for w in result.worst] == sorted(scores["dice"])[:6]


def test_finished_folds_are_reused_until_something_changes(setup, tmp_path, monkeypatch):
    cfg = setup["cfg"]
    args = (setup["data"], setup["folds_csv"], tmp_path)
    first = evaluate_oof(cfg.predict, *args, model=setup["model"], progress=False)

    def no_prediction(*a, **k):
        raise AssertionError("a finished fold was predicted again")

    monkeypatch.setattr("pipeline.evaluate.oof.score_distributed", no_prediction)
    again = evaluate_oof(cfg.predict, *args, model=setup["model"], progress=False)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    assert [w.img for w in again.worst] == [w.img for w in first.worst]
    other = dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, threshold=0.4))
    with pytest.raises(AssertionError, match="predicted again"):
        evaluate_oof(other.predict, *args, model=setup["model"], progress=False)


def test_a_changed_mask_or_precision_is_not_resumed(setup, tmp_path):
    """Review defect 9: the fold's key holds the mask bytes and the resolved precision."""
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    args = (setup["folds_csv"], tmp_path / "report")
    first = evaluate_oof(setup["cfg"].predict, data, *args, model=setup["model"], progress=False)
    mask_path = train_index(data)["mask_path"].iloc[0]
    mask = read_mask(mask_path)
    write_mask_gif(mask_path, 1 - mask)  # same name, same size class: other content
    again = evaluate_oof(setup["cfg"].predict, data, *args, model=setup["model"], progress=False)
    changed = first.scores.set_index("img")["dice"] != again.scores.set_index("img")["dice"]
    assert changed.sum() == 1
    settings = prepare_engine(setup["cfg"].predict, "cpu").settings()
    assert settings["precision"] in ("fp32", "bf16") and settings["device"] == "cpu"


# A different value for every result setting of predict: each must change the resume key.
CHANGED = {"tta": [], "threshold": 0.4, "largest_component": False, "precision": "bf16",
           "channels_last": False, "compile": True, "compile_mode": "reduce-overhead",
           "refiner": True, "decode": "device"}


def test_every_prediction_setting_is_part_of_the_resume_key(setup, tmp_path, fast_compile):
    """One key builder covers every setting that changes a prediction (decode, compile and the
    refiner included): flipping any one of them changes the fold's resume key, so evaluate
    never reuses scores, nor submit rows, made another way."""
    assert set(CHANGED) == set(result_keys(PredictConfig))
    ckpt = tmp_path / "tiny" / "fold0" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(setup["model"].fold_checkpoints()[0], ckpt)
    save_refiner(refiner_beside(ckpt), EdgeRefiner(4), default(RefineConfig, width=4), [])
    rows = train_index(setup["data"]).head(2)
    p = dataclasses.replace(setup["cfg"].predict, largest_component=True)

    def key(predict: PredictConfig) -> str:
        ensemble = load_ensemble([ckpt], prepare_engine(predict, "cpu", announce=False))
        return oof.fold_key(ensemble, setup["data"], rows, (64, 96))

    base = key(p)
    assert key(p) == base  # the same settings, the same key
    for name, value in CHANGED.items():
        assert key(dataclasses.replace(p, **{name: value})) != base, name
    assert key(dataclasses.replace(p, batch_size=1, num_workers=1, overlap=False)) == base
    # the refiner's own file counts too
    on = dataclasses.replace(p, refiner=True)
    before = key(on)
    save_refiner(refiner_beside(ckpt), EdgeRefiner(8), default(RefineConfig, width=8), [])
    assert key(on) != before


def test_a_checkpoint_is_never_scored_on_images_it_learnt_from(setup, tmp_path, capsys):
    """Scoring fold 0's model with a folds file in which fold 0 holds other cars (images it
    trained on) is refused; a model without a record is warned about."""
    cfg = setup["cfg"]
    roots = Roots(checkpoints=tmp_path / "ck")
    save_checkpoint(roots.run("tiny", 0).best, constant_model(cfg, -30.0), cfg,
                    trained_on=split(setup["folds"], 0)[0])
    swapped = setup["folds"].assign(fold=lambda f: f["fold"].map({0: 1, 1: 0}))
    other = write_folds(swapped, tmp_path / "other.csv")
    with pytest.raises(PipelineError, match="learnt from 32 of the 32 images of fold 0 of"):
        evaluate_oof(cfg.predict, setup["data"], other, tmp_path / "r1", model=roots.model("tiny"),
                     progress=False)
    evaluate_oof(cfg.predict, setup["data"], setup["folds_csv"], tmp_path / "r2",
                 model=roots.model("tiny"), progress=False)
    ckpt = torch.load(setup["model"].fold_checkpoints()[0], weights_only=False)
    del ckpt["trained_on"]  # as an older version wrote it
    unknown = Roots(checkpoints=tmp_path / "old")
    unknown.run("tiny", 0).checkpoint_dir.mkdir(parents=True)
    torch.save(ckpt, unknown.run("tiny", 0).best)
    evaluate_oof(cfg.predict, setup["data"], setup["folds_csv"], tmp_path / "r3",
                 model=unknown.model("tiny"), progress=False)
    assert "records no training images" in capsys.readouterr().err


def test_all_images_mode_scores_an_ensemble_on_a_labelled_folder(setup):
    ckpt = setup["model"].fold_checkpoints()[1]
    result = evaluate_all_images(setup["cfg"].predict, "tiny", setup["data"], [ckpt],
                                 progress=False)
    assert len(result.scores) == 64 and (result.scores["fold"] == -1).all()
    row = result.scores.iloc[5]
    mask = train_index(setup["data"]).set_index("img").loc[row.img, "mask_path"]
    assert row.dice == pytest.approx(all_car_dice(mask))
    assert result.summary.mode == "all-images"


def test_missing_folds_file_is_a_clear_error(setup, tmp_path):
    with pytest.raises(PipelineError, match="folds file not found"):
        evaluate_oof(setup["cfg"].predict, setup["data"], tmp_path / "nope.csv", tmp_path,
                     model=setup["model"], progress=False)
