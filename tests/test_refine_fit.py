"""Training the edge refiner (pipeline.refine.fit): the loss weights the band, windows
follow the edge, training is seeded, and the stage core trains on the fold's training images
at the model's own input size."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from pipeline.config import Config, RefineConfig, default
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.folds.splits import load_folds
from pipeline.refine import fit as refiner_module
from pipeline.refine.fit import (
    EdgePatches,
    fit_refiner,
    refiner_key,
    refiner_loss,
    train_refiner,
)
from pipeline.refine.store import load_refiner, refiner_source
from pipeline.runs import Roots

TINY = default(RefineConfig, patch=24, context=4, tile=8, band_margin=2, width=4, steps=3,
                    images_per_batch=2, patches_per_image=2, log_every=1, num_workers=0)


def step_edge(n: int = 1, size: int = 8) -> torch.Tensor:
    """N x size x size coarse probabilities: car on the right half, a sharp edge between
    columns 3 and 4."""
    coarse = torch.zeros(n, size, size)
    coarse[:, :, size // 2:] = 1
    return coarse


def test_the_loss_counts_the_band_fully_and_the_rest_at_outside_weight():
    torch.manual_seed(0)
    coarse = step_edge(2)
    logits, target = torch.randn(2, 8, 8), (torch.rand(2, 8, 8) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    band = torch.zeros(2, 8, 8, dtype=torch.bool)
    band[:, :, 3:5] = True  # margin 0: the pixels on both sides of the edge
    cfg = default(RefineConfig, context=0, band_margin=0, outside_weight=0.25)
    expected = (bce[band].sum() + 0.25 * bce[~band].sum()) / (band.sum() + 0.25 * (~band).sum())
    torch.testing.assert_close(refiner_loss(logits, target, coarse, cfg), expected)
    only_band = dataclasses.replace(cfg, outside_weight=0.0)
    torch.testing.assert_close(refiner_loss(logits, target, coarse, only_band), bce[band].mean())


def test_the_loss_ignores_the_context_border():
    torch.manual_seed(1)
    coarse, target = step_edge(1, 12), (torch.rand(1, 12, 12) > 0.5).float()
    logits = torch.randn(1, 12, 12)
    cfg = default(RefineConfig, context=2, band_margin=1, outside_weight=0.1)
    border = logits.clone()
    border[:, :2] = border[:, -2:] = border[:, :, :2] = border[:, :, -2:] = 30.0
    torch.testing.assert_close(refiner_loss(border, target, coarse, cfg),
                               refiner_loss(logits, target, coarse, cfg))


def test_windows_sit_on_the_cars_edge(tiny_data):
    rows = train_index(tiny_data).head(3)
    patches = EdgePatches(rows, dataclasses.replace(TINY, patches_per_image=4), (16, 24))
    rgb, soft, target = patches[0]
    assert rgb.shape == (4, 24, 24, 3) and rgb.dtype == torch.uint8
    assert soft.shape == target.shape == (4, 24, 24) and target.dtype == torch.uint8
    for window in soft:  # every window holds part of the coarse edge
        assert ((window > 0.02) & (window < 0.98)).any()
    again = patches[0]
    assert all(torch.equal(a, b) for a, b in zip((rgb, soft, target), again))  # seeded


def test_fit_refiner_is_seeded(tiny_data):
    rows = train_index(tiny_data).head(4)
    runs = [fit_refiner(TINY, rows, (16, 24), torch.device("cpu"), "fp32", progress=False)
            for _ in range(2)]
    (a, hist_a), (b, hist_b) = runs
    assert [h["step"] for h in hist_a] == [1, 2, 3]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]
    assert all(math.isfinite(h["loss"]) for h in hist_a)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.out.weight.abs().sum() > 0 and not a.training  # it learnt, and is ready to apply
    with pytest.raises(PipelineError, match="refine.patch"):
        fit_refiner(dataclasses.replace(TINY, patch=8), rows, (16, 24), torch.device("cpu"))


def test_train_refiner_uses_the_folds_training_images_and_the_models_size(
        tiny_data, tiny_folds, tiny_cache, tiny_trained, tmp_path, monkeypatch):
    run = Roots(checkpoints=tmp_path / "ck").run("tiny", 0)
    run.checkpoint_dir.mkdir(parents=True)
    run.best.write_bytes(tiny_trained.best.read_bytes())
    seen = {}
    real_fit = refiner_module.fit_refiner

    def spy(cfg, rows, coarse, *args, **kwargs):
        seen.update(imgs=set(rows["img"]), coarse=coarse)
        return real_fit(cfg, rows, coarse, *args, **kwargs)

    monkeypatch.setattr(refiner_module, "fit_refiner", spy)
    cfg = dataclasses.replace(tiny_config(tiny_data, tiny_cache, height=32, width=48),
                              refine=TINY)
    result = train_refiner(cfg, 0, tiny_folds, run, torch.device("cpu"), progress=False)
    folds = load_folds(tiny_folds)
    assert seen["imgs"] == set(folds.query("fold != 0")["img"])  # never fold 0's images
    assert seen["coarse"] == (64, 96)  # best.pt's training size, not this config's 32x48
    assert result.path == run.refiner and result.images == len(seen["imgs"])
    _, back, seen_by_refiner = load_refiner(run.refiner)
    assert back == TINY and len(result.history) == 3
    assert seen_by_refiner == seen["imgs"]  # recorded: evaluation refuses it on these images
    assert refiner_source(run.refiner) == refiner_key(cfg, run.best)  # what it was made from


def test_the_refiners_key_is_its_model_and_the_settings_that_change_it(tiny_trained, tmp_path):
    cfg = default(Config)
    key = refiner_key(cfg, tiny_trained.best)
    assert key == refiner_key(cfg, tiny_trained.best)
    for other in (dataclasses.replace(cfg.refine, steps=7), dataclasses.replace(cfg.refine, tile=8)):
        assert refiner_key(dataclasses.replace(cfg, refine=other), tiny_trained.best) != key
    same = dataclasses.replace(cfg.refine, train=True, num_workers=0, log_every=1)  # not how
    assert refiner_key(dataclasses.replace(cfg, refine=same), tiny_trained.best) == key
    other_model = tmp_path / "best.pt"
    other_model.write_bytes(tiny_trained.last.read_bytes())
    assert refiner_key(cfg, other_model) != key
