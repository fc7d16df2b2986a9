"""pipeline.train.loop: one training epoch learns, one validation pass counts exactly what an
independent computation counts, a time-budget probe can shorten an epoch, and the uint8 batches
of the workers are normalised on the device exactly as the per-image reference does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import ModelConfig, TrainConfig, default
from pipeline.data.dataset import SegmentationDataset
from pipeline.data.layout import train_index
from pipeline.data.transforms import normalize
from pipeline.device import Precision
from pipeline.dice import count_metrics, dice_per_image
from pipeline.losses import build_loss
from pipeline.models.factory import build_model
from pipeline.schedule import Schedule, build_optimizer
from pipeline.train.budget import Probe
from pipeline.train.loop import Parts, to_input, to_target, train_one_epoch, validate_epoch


def test_tiny_model_overfits_a_tiny_batch(tiny_data):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = train_index(tiny_data).head(4)
    loader = DataLoader(SegmentationDataset(rows, 64, 96), batch_size=4)
    model = build_model(default(ModelConfig, arch="unet", base_width=8, depth=2))
    cfg = default(TrainConfig, lr=0.01, epochs=30, warmup_epochs=0, grad_clip=0.0,
                  channels_last=False)
    opt = build_optimizer(model, cfg)
    loss_fn = build_loss(cfg)
    parts = Parts(model, opt, Schedule(opt, cfg, 1), torch.amp.GradScaler("cpu", enabled=False),
                  loss_fn, Precision())
    x, y = next(iter(loader))
    x, y = to_input(x, torch.device("cpu"), False), to_target(y, torch.device("cpu"))

    def dice() -> float:
        # batch statistics: the batch is the whole data set here, and 30 steps are too few for
        # BatchNorm's running averages to catch up with weights that move this fast
        model.train()
        with torch.no_grad():
            return float(dice_per_image(model(x) > 0, y > 0.5).mean())

    before = dice()
    losses = []
    for _ in range(30):
        result = train_one_epoch(parts, loader, cfg, torch.device("cpu"), progress=False)
        losses.append(result.loss_sum / result.images)
    after = dice()
    assert losses[-1] < 0.5 * losses[0], losses
    assert after > before + 0.2 and after > 0.95, (before, after)


class _Fixed(nn.Module):
    """Logits that do not depend on the input: a vertical band, for exact metric checks."""

    def __init__(self, h: int, w: int):
        super().__init__()
        band = torch.full((1, 1, h, w), -4.0)
        band[..., w // 4: 3 * w // 4] = 4.0
        self.register_buffer("band", band)

    def forward(self, x):
        return self.band.expand(x.shape[0], -1, -1, -1)


@pytest.mark.parametrize("full_res", [False, True])
def test_validate_epoch_matches_an_independent_computation(tiny_data, full_res):
    rows = train_index(tiny_data).head(5)
    ds = SegmentationDataset(rows, 32, 48, full_res=full_res)
    model = _Fixed(32, 48)
    tc = default(TrainConfig, full_res_val=full_res)
    parts = Parts(model, None, None, None, build_loss(tc), Precision())
    counts, _, n = validate_epoch(parts, DataLoader(ds, batch_size=2), tc, torch.device("cpu"),
                                  progress=False)
    assert n == 5 and counts[-1] == 5
    items = [ds[i] for i in range(5)]
    if full_res:  # the reference: upsample the logits to 64x96 and compare to the source GIFs
        target = torch.stack([it[2] for it in items])
        logits = F.interpolate(model.band, size=(64, 96), mode="bilinear", align_corners=False)
    else:
        target = torch.stack([it[1] for it in items])
        logits = model.band
    pred = (logits[0, 0] > 0).expand_as(target)
    expected_dice = dice_per_image(pred.numpy(), target.numpy()).mean()
    assert count_metrics(counts)["dice"] == pytest.approx(expected_dice)
    tp = int((pred & (target > 0)).sum())
    assert int(counts[0]) == tp
    assert int(counts[:4].sum()) == target.numel()


def test_probe_can_shorten_an_epoch(tiny_data):
    torch.manual_seed(0)
    rows = train_index(tiny_data).head(12)
    loader = DataLoader(SegmentationDataset(rows, 64, 96), batch_size=2)  # 6 batches
    model = build_model(default(ModelConfig, arch="unet", base_width=8, depth=2))
    cfg = default(TrainConfig)
    opt = build_optimizer(model, cfg)
    parts = Parts(model, opt, Schedule(opt, cfg, 6), torch.amp.GradScaler("cpu", enabled=False),
                  build_loss(cfg), Precision())
    paces = []

    def plan(pace: float) -> int:
        paces.append(pace)
        return 3

    result = train_one_epoch(parts, loader, cfg, torch.device("cpu"), progress=False,
                             probe=Probe(plan, steps=2, skip=1))
    assert len(paces) == 1 and paces[0] > 0
    assert result.images == 6 and result.batches == 3  # 3 batches of 2, not 6


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_input_equals_the_per_image_normalisation(tiny_data, channels_last):
    rows = train_index(tiny_data).head(3)
    ds = SegmentationDataset(rows, 32, 48)
    images, masks = (torch.stack(t) for t in zip(*(ds[i] for i in range(3))))
    x = to_input(images, torch.device("cpu"), channels_last)
    expected = torch.stack([normalize(im.numpy()) for im in images])
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 48)
    assert torch.equal(x, expected)  # bit for bit: training did not change with the move
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last
                           else torch.contiguous_format)
    y = to_target(masks, torch.device("cpu"))
    assert y.shape == (3, 1, 32, 48) and y.dtype == torch.float32
    assert torch.equal(y[:, 0], masks.float())
