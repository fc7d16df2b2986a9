"""The visualisation CLI (``python -m pipeline.visualize overlay|features``): feature grids from
a checkpoint and from a model YAML, a non-U-Net checkpoint refused, one-line errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.config import Config, ModelConfig, default
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.factory import build_model
from pipeline.visualize import __main__ as vis
from pipeline.visualize.features import grid_size

runner = CliRunner()


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


def test_features_from_checkpoint_and_from_model_yaml(tiny_trained, photos, tmp_path):
    out = tmp_path / "features.png"
    result = runner.invoke(vis.app, ["features", str(photos[0]), "--checkpoint",
                                     str(tiny_trained.best), "--out", str(out), "--channels", "4",
                                     "--columns", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # the tiny U-Net has at least 4 channels in every map: 4 tiles each
    png = cv2.imread(str(out))
    tile_h = round(128 * 50 / 130)
    assert png.shape[:2] == grid_size([4, 4, 4], 4, tile_h, 128)

    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  arch: unet\n  base_width: 4\n  depth: 2\n")
    out2 = tmp_path / "untrained.png"
    result = runner.invoke(vis.app, ["features", str(photos[1]), "--model", str(yaml),
                                     "--out", str(out2), "--device", "cpu",
                                     "train.height=32", "train.width=48"])
    assert result.exit_code == 0, result.output
    # base width 4: 4 channels in the first conv, 16 at the bottleneck, 8 after the first up
    assert cv2.imread(str(out2)).shape[:2] == grid_size([4, 16, 8], 8, 192, 128)


def test_features_reject_non_unet_checkpoint(tmp_path, photos):
    cfg = default(Config, model=default(ModelConfig, arch="FPN", encoder="mobilenet_v2"))
    cfg.train.height, cfg.train.width = 32, 48
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


def test_overlay_cli_missing_photo_names_it(tiny_trained, tmp_path):
    result = runner.invoke(vis.app, ["overlay", str(tmp_path / "no.jpg"), "--checkpoint",
                                     str(tiny_trained.best), "--out-dir", str(tmp_path),
                                     "--device", "cpu"])
    assert result.exit_code == 1
    assert "no.jpg: image not found" in result.output
