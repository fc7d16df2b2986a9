"""Visualisation: overlays at the photo's own size, the U-Net feature-map grid, CLI errors."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline import visualize as vis
from pipeline.config import Config, ModelConfig, PredictConfig
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.factory import build_model
from pipeline.predict import Ensemble, Member

runner = CliRunner()
TINY_UNET = ModelConfig(arch="unet", name="tiny", base_width=4, depth=2)


def _cfg(model: ModelConfig = TINY_UNET) -> Config:
    cfg = Config(model=model)
    cfg.train.height, cfg.train.width = 32, 48
    cfg.predict.tta = ["hflip"]
    return cfg


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = _cfg()
    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, metrics={"val_dice": 0.5})
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two synthetic photos of unusual sizes: a bright car-like ellipse on a grey background."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for name, (h, w) in {"wide.jpg": (50, 130), "tall.png": (90, 60)}.items():
        img = np.full((h, w, 3), 90, np.uint8)
        cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 4), 0, 0, 360, (200, 40, 40), -1)
        path = root / name
        cv2.imwrite(str(path), img[..., ::-1])
        paths.append(path)
    return paths


def test_fit_size_keeps_aspect_and_hits_the_training_size():
    assert vis.fit_size(1280, 1918, 128, 192) == (128, 192)  # Carvana aspect: exact
    assert vis.fit_size(1000, 1000, 128, 192) == (128, 128)  # square photo: fits, not stretched
    assert vis.fit_size(300, 1200, 128, 192) == (48, 192)


def test_overlay_tints_inside_and_keeps_the_rest():
    image = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1
    out = vis.overlay(image, mask, alpha=0.5, thickness=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = np.round(0.5 * 100 + 0.5 * np.array(vis.TINT)).astype(np.uint8)
    assert (out[15:25, 25:35] == expected).all()  # inside, away from the outline
    assert (out[:5] == 100).all() and (out[:, :15] == 100).all()  # far outside: untouched
    assert (out[10, 20:40] == vis.OUTLINE).all()  # the outline is drawn on the mask's edge
    with pytest.raises(ValueError):
        vis.overlay(image, mask[:-1])


def test_predict_probability_is_at_photo_size_and_averages_flips():
    class Left(torch.nn.Module):  # logit +10 on the left half of its input, -10 on the right
        def forward(self, x):
            w = x.shape[-1]
            out = torch.full_like(x[:, :1], -10.0)
            out[..., : w // 2] = 10.0
            return out

    image = np.zeros((30, 70, 3), np.uint8)
    ensemble = Ensemble([Member(Left(), (16, 24))])
    cfg = PredictConfig(tta=[], precision="fp32", channels_last=False)
    plain = vis.predict_probability(ensemble, image, cfg)
    assert plain.shape == (30, 70)
    assert plain[:, :30].min() > 0.99 and plain[:, 40:].max() < 0.01
    # hflip TTA: the flipped view says "right half"; the average is 0.5 everywhere.
    both = vis.predict_probability(ensemble, image, dataclasses.replace(cfg, tta=["hflip"]))
    assert np.allclose(both, 0.5, atol=1e-4)


def test_overlay_images_writes_one_png_per_photo_at_its_size(unet_ckpt, photos, tmp_path):
    out = vis.overlay_images([unet_ckpt, unet_ckpt], photos, tmp_path / "ov", progress=False)
    assert [p.name for p in out] == ["wide_overlay.png", "tall_overlay.png"]
    for png, photo in zip(out, photos):
        assert cv2.imread(str(png)).shape[:2] == cv2.imread(str(photo)).shape[:2]


def test_feature_grid_has_the_expected_size_and_tiles():
    rng = np.random.default_rng(0)
    step = np.full((4, 32, 48), -3.0, np.float32)
    step[..., 24:] = 5.0  # left half -3, right half 5
    maps = {
        "first_double_conv": step,
        "bottleneck": rng.random((16, 8, 12), dtype=np.float32),
        "first_up": rng.random((8, 16, 24), dtype=np.float32),
    }
    image = np.zeros((32, 48, 3), np.uint8)
    grid = vis.feature_grid(maps, image, np.full((32, 48), 0.5), channels=6, columns=4,
                            tile_width=30)
    # tiles are 30 x 20; rows: photo 1, first conv 4 ch -> 1, bottleneck 6 ch -> 2, first up -> 2
    tile_h, tile_w = 20, 30
    rows = 1 + 1 + 2 + 2
    assert grid.shape == (
        vis.GAP + 4 * vis.TITLE_H + rows * (tile_h + vis.GAP),
        vis.GAP + 4 * (tile_w + vis.GAP),
        3,
    )
    assert grid.shape[:2] == vis.grid_size([4, 6, 6], 4, tile_h, tile_w)
    # A channel is min-max normalised on its own: -3 -> 0 on the left, 5 -> 255.
    top = vis.GAP + vis.TITLE_H + (tile_h + vis.GAP) + vis.TITLE_H
    first_tile = grid[top : top + tile_h, vis.GAP : vis.GAP + tile_w, 0]
    assert first_tile[:, 0].max() == 0 and first_tile[:, -1].min() == 255


def test_features_from_checkpoint_and_from_model_yaml(unet_ckpt, photos, tmp_path):
    out = tmp_path / "features.png"
    result = runner.invoke(vis.app, ["features", str(photos[0]), "--checkpoint", str(unet_ckpt),
                                     "--out", str(out), "--channels", "4", "--columns", "4",
                                     "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # tiny U-Net: 4 channels in the first conv, 16 at the bottleneck, 8 after the first up.
    png = cv2.imread(str(out))
    tile_h = round(128 * 50 / 130)
    assert png.shape[:2] == vis.grid_size([4, 4, 4], 4, tile_h, 128)

    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  arch: unet\n  base_width: 4\n  depth: 2\n")
    out2 = tmp_path / "untrained.png"
    result = runner.invoke(vis.app, ["features", str(photos[1]), "--model", str(yaml),
                                     "--out", str(out2), "--device", "cpu",
                                     "train.height=32", "train.width=48"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out2)).shape[:2] == vis.grid_size([4, 16, 8], 8, 192, 128)


def test_features_reject_non_unet_checkpoint(tmp_path, photos):
    cfg = _cfg(ModelConfig(arch="FPN", encoder="mobilenet_v2"))
    path = tmp_path / "fpn.pt"
    save_checkpoint(path, build_model(cfg.model), cfg)
    result = runner.invoke(vis.app, ["features", str(photos[0]), "--checkpoint", str(path),
                                     "--device", "cpu", "--out", str(tmp_path / "f.png")])
    assert result.exit_code == 1
    assert "need the hand-written U-Net" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["overlay", "nope.jpg", "--checkpoint", "missing.pt"], "missing.pt: checkpoint not found"),
        (["features", "x.jpg"], "exactly one of --checkpoint"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    result = runner.invoke(vis.app, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_overlay_cli_missing_photo_names_it(unet_ckpt, tmp_path):
    result = runner.invoke(vis.app, ["overlay", str(tmp_path / "no.jpg"), "--checkpoint",
                                     str(unet_ckpt), "--out-dir", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 1
    assert "no.jpg: image not found" in result.output


def test_require_unet_error():
    with pytest.raises(PipelineError, match="feature maps need the hand-written U-Net"):
        vis.require_unet(torch.nn.Conv2d(3, 1, 1), "x.pt")
