"""``python -m pipeline.benchmark predict``: the naive Kaggle-kernel loop it compares the engine
with really is an independent path to the same masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline import rle
from pipeline.benchmark.engine_speed import cycle, mean_agreement, naive_predict
from pipeline.config import Config, ModelConfig, PredictConfig
from pipeline.data.layout import Layout
from pipeline.data.layout import submission_names as sample_names
from pipeline.inference.engine import iter_predictions, load_ensemble
from pipeline.metrics import dice_per_image
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint

FP32 = PredictConfig(precision="fp32", num_workers=0, batch_size=4)


def tiny_checkpoint(path, height=32, width=48, seed=0, label="tiny"):
    torch.manual_seed(seed)
    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        model=ModelConfig(arch="unet", base_width=4, depth=2, name=label),
        train=dataclasses.replace(cfg.train, height=height, width=width),
    )
    return save_checkpoint(path, build_model(cfg.model), cfg)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny" / "fold0" / "best.pt")


def test_iter_predictions_in_order_with_workers_equal_to_naive_loop(tiny_data, ckpt):
    names = sample_names(tiny_data)[:6]
    paths = [Layout(tiny_data).test_dir / n for n in names]
    ens = load_ensemble([ckpt], "cpu", FP32)
    cfg = dataclasses.replace(FP32, num_workers=2, batch_size=4)
    preds = list(iter_predictions(ens, paths, cfg, "cpu", out_shape=(64, 96)))
    assert [n for p in preds for n in p.names] == names
    assert [i for p in preds for i in p.indices] == list(range(6))
    probs = torch.cat([p.probs for p in preds])
    assert probs.shape == (6, 64, 96)
    # the same batches without workers give the same numbers
    serial = torch.cat([p.probs for p in iter_predictions(ens, paths, FP32, "cpu", (64, 96))])
    torch.testing.assert_close(probs, serial)
    # an independent path (PIL decode and resize, one forward per flip, cv2 upsampling)
    model = ens.members[0].model.to(memory_format=torch.contiguous_format)
    naive = [rle.decode(naive_predict(model, p, (32, 48), cfg.tta, 0.5, (64, 96)), (64, 96))
             for p in paths]
    agreement = dice_per_image((probs > 0.5).numpy(), np.stack(naive))
    assert agreement.mean() > 0.95


def test_mean_agreement_and_cycle():
    a = np.zeros((4, 6), np.uint8)
    a[1:3, 1:5] = 1  # 8 pixels
    b = a.copy()
    b[1, 1:5] = 0  # 4 of them
    texts = [rle.encode(a), rle.encode(b)]
    # Dice(a, a) = 1 and Dice(a, b) = 2 * 4 / (8 + 4)
    assert mean_agreement(texts, [texts[0], texts[0]], (4, 6)) == pytest.approx((1 + 8 / 12) / 2)
    assert cycle(["x", "y"], 5) == ["x", "y", "x", "y", "x"]
