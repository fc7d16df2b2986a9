"""Pictures of what a model does: ``python -m pipeline.visualize overlay|features``.

``overlay``: predicted car masks drawn on any photo (a Kaggle image or a photo from anywhere),
at the photo's own size: the photo is shrunk to fit the size the model was trained at (keeping
its aspect ratio), predicted with flip TTA, and the probabilities are upsampled back to the
photo. One ``<photo>_overlay.png`` per photo: the mask tinted, its outline drawn.

``features``: the feature maps of the hand-written U-Net for one photo (the first double conv,
the bottleneck and the first up block, as the seeds show them), as a PNG grid: a row with the
photo and the predicted probability, then the first channels of each map as greyscale tiles,
each channel min-max normalised on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import typer
from torch import nn
from tqdm import tqdm

from pipeline.atomic import atomic_path
from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import PredictConfig, cli_config
from pipeline.data.dataset import normalize, resize_image
from pipeline.data.io import read_image
from pipeline.errors import PipelineError, one_line_errors
from pipeline.predict import (
    Ensemble,
    Member,
    load_ensemble,
    pick_device,
    predict_probs,
    to_masks,
    tta_dims,
)

FEATURE_KEYS = ("first_double_conv", "bottleneck", "first_up")
TINT = (0, 200, 80)  # RGB of the mask tint
OUTLINE = (255, 40, 40)  # RGB of the mask outline
TITLE_H = 20  # pixels of the caption band above each row group of the feature grid
GAP = 2  # pixels between tiles
BACKGROUND = 24


# --------------------------------------------------------------------------- prediction


def fit_size(height: int, width: int, train_height: int, train_width: int) -> tuple[int, int]:
    """The size a ``height`` x ``width`` photo is resized to before the model sees it.

    It fits inside the training size with the photo's aspect ratio, so a car keeps its shape;
    a photo with Carvana's aspect ratio lands exactly on the training size.
    """
    scale = min(train_height / height, train_width / width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    if abs(h - train_height) <= 1 and abs(w - train_width) <= 1:
        return train_height, train_width
    return h, w


def predict_probability(
    ensemble: Ensemble,
    image: np.ndarray,
    cfg: PredictConfig,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Car probability (H, W) float32 in [0, 1] for an RGB uint8 photo of any size H x W.

    The inference engine (:func:`pipeline.predict.predict_probs`: flip TTA, probabilities
    averaged over views and models, bilinear upsampling) with one change: each model sees the
    photo at :func:`fit_size` of its training size instead of stretched to it, so a photo with
    another aspect ratio keeps its shape. Carvana photos get exactly the engine's input.
    """
    height, width = image.shape[:2]
    fitted = Ensemble(
        [Member(m.model, fit_size(height, width, *m.size), m.source) for m in ensemble.members]
    )
    batches = {
        size: torch.from_numpy(resize_image(image, *size))[None].to(device)
        for size in fitted.sizes
    }
    probs = predict_probs(fitted, batches, cfg, out_shape=(height, width))
    return probs[0].clamp(0, 1).cpu().numpy()


def overlay(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, thickness: int | None = None
) -> np.ndarray:
    """The photo with ``mask`` (H, W, nonzero = car) tinted and outlined; RGB uint8, same size.

    Pixels outside the mask and away from its outline keep their value.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    out = image.copy()
    car = mask.astype(bool)
    tint = np.asarray(TINT, dtype=np.float32)
    out[car] = ((1 - alpha) * image[car].astype(np.float32) + alpha * tint).round().astype(np.uint8)
    if thickness is None:  # about 2 px on a 1918 x 1280 photo, 1 px on small ones
        thickness = max(1, round(min(image.shape[:2]) / 600))
    contours, _ = cv2.findContours(car.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE, thickness)
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Atomic PNG write of an RGB (or greyscale) uint8 array."""
    path = Path(path)
    array = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise PipelineError(f"{path}: could not encode the PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


def overlay_images(
    checkpoints: Sequence[str | Path],
    images: Sequence[str | Path],
    out_dir: str | Path,
    threshold: float | None = None,
    tta: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Write ``<out_dir>/<photo stem>_overlay.png`` for each photo; returns the paths.

    The checkpoints' predictions are averaged (an ensemble); ``threshold`` and ``tta`` default
    to the first checkpoint's ``predict`` settings. A pixel is car when its probability is
    above the threshold, as in the submission.
    """
    from pipeline.models.checkpoint import checkpoint_config, load_checkpoint

    if not checkpoints:
        raise PipelineError("overlay needs at least one --checkpoint")
    if not images:
        raise PipelineError("overlay needs at least one photo")
    cfg = checkpoint_config(load_checkpoint(checkpoints[0])).predict
    cfg = dataclasses.replace(
        cfg,
        threshold=cfg.threshold if threshold is None else threshold,
        tta=list(cfg.tta if tta is None else tta),
        channels_last=cfg.channels_last and torch.device(device).type == "cuda",
    )
    tta_dims(cfg.tta)  # a wrong name fails before any model is loaded
    ensemble = load_ensemble(checkpoints, device, cfg)
    written = []
    for path in tqdm(images, desc="overlays", unit="img", disable=not progress):
        image = read_image(path)
        prob = predict_probability(ensemble, image, cfg, device)
        out = Path(out_dir) / f"{Path(path).stem}_overlay.png"
        mask = to_masks(torch.from_numpy(prob)[None], cfg.threshold, cfg.largest_component)[0]
        written.append(write_png(out, overlay(image, mask.numpy())))
    return written


# --------------------------------------------------------------------------- feature maps


def require_unet(model: nn.Module, source: str) -> nn.Module:
    """The bare hand-written U-Net inside ``model``, or a one-line error naming ``source``."""
    from pipeline.models.checkpoint import unwrap
    from pipeline.models.unet import UNet

    bare = unwrap(model)
    if not isinstance(bare, UNet):
        raise PipelineError(
            f"{source}: feature maps need the hand-written U-Net (model.arch: unet), this is "
            f"{type(bare).__name__}; pass a U-Net checkpoint or --model configs/models/unet.yaml"
        )
    return bare


@torch.no_grad()
def feature_maps(
    model: nn.Module,
    image: np.ndarray,
    size: tuple[int, int],
    keys: Sequence[str] = FEATURE_KEYS,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({key: C x h x w float32 map}, probability at the model's input size) for one photo."""
    h, w = fit_size(*image.shape[:2], *size)
    x = normalize(resize_image(image, h, w))[None].to(device)
    feats = model.forward_features(x)
    missing = [k for k in keys if k not in feats]
    if missing:
        raise PipelineError(f"the U-Net has no feature map {missing[0]}; known: {', '.join(feats)}")
    maps = {k: feats[k][0].float().cpu().numpy() for k in keys}
    prob = torch.sigmoid(feats["logits"][0, 0].float()).cpu().numpy()
    return maps, prob


def _norm01(a: np.ndarray) -> np.ndarray:
    """Min-max to 0..255 uint8; a constant map is black."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.zeros(a.shape, dtype=np.uint8)
    return ((a - lo) / (hi - lo) * 255).round().astype(np.uint8)


def grid_size(
    n_channels: Sequence[int], columns: int, tile_h: int, tile_w: int
) -> tuple[int, int]:
    """(height, width) in pixels of :func:`feature_grid` for maps with ``n_channels`` tiles each
    (the photo/prediction row comes first and has 2 tiles)."""
    rows = [math.ceil(2 / columns)] + [math.ceil(n / columns) for n in n_channels]
    height = GAP + sum(TITLE_H + r * (tile_h + GAP) for r in rows)
    width = GAP + columns * (tile_w + GAP)
    return height, width


def feature_grid(
    maps: dict[str, np.ndarray],
    image: np.ndarray,
    probability: np.ndarray,
    channels: int = 16,
    columns: int = 8,
    tile_width: int = 128,
) -> np.ndarray:
    """An RGB uint8 grid: the photo and its probability, then the first ``channels`` channels of
    each map in ``maps`` (nearest-neighbour upsampled, so a coarse map shows its resolution),
    each group under a caption with its name, channel count and spatial size."""
    columns = max(2, columns)
    tile_h = max(8, round(tile_width * image.shape[0] / image.shape[1]))
    tile_w = tile_width
    counts = [min(channels, m.shape[0]) for m in maps.values()]
    height, width = grid_size(counts, columns, tile_h, tile_w)
    grid = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)

    def tile(a: np.ndarray, interp: int) -> np.ndarray:
        t = cv2.resize(a, (tile_w, tile_h), interpolation=interp)
        return t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=2)

    groups = [
        ("photo | probability", [
            tile(image, cv2.INTER_AREA),
            tile((np.clip(probability, 0, 1) * 255).round().astype(np.uint8), cv2.INTER_LINEAR),
        ]),
    ]
    for (key, m), n in zip(maps.items(), counts):
        caption = f"{key}: {n} of {m.shape[0]} channels, {m.shape[1]}x{m.shape[2]}"
        groups.append((caption, [tile(_norm01(m[c]), cv2.INTER_NEAREST) for c in range(n)]))

    y = GAP
    for caption, tiles in groups:
        cv2.putText(grid, caption, (GAP + 2, y + TITLE_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (235, 235, 235), 1, cv2.LINE_AA)
        y += TITLE_H
        for i, t in enumerate(tiles):
            r, c = divmod(i, columns)
            top, left = y + r * (tile_h + GAP), GAP + c * (tile_w + GAP)
            grid[top : top + tile_h, left : left + tile_w] = t
        y += math.ceil(len(tiles) / columns) * (tile_h + GAP)
    return grid


def render_features(
    model: nn.Module,
    size: tuple[int, int],
    image_path: str | Path,
    out: str | Path,
    channels: int = 16,
    columns: int = 8,
    source: str = "model",
    device: str | torch.device = "cpu",
) -> Path:
    """Write the feature-map grid of ``model`` (a hand-written U-Net) for one photo."""
    unet = require_unet(model, source).to(device).eval()
    image = read_image(image_path)
    maps, prob = feature_maps(unet, image, size, device=device)
    return write_png(out, feature_grid(maps, image, prob, channels, columns))


# --------------------------------------------------------------------------- CLI


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])


@app.command("overlay")
@one_line_errors
def overlay_cmd(
    images: Annotated[list[Path], typer.Argument(help="Photos of any size (jpg, png, ...).")],
    checkpoint: Annotated[
        list[Path], typer.Option("--checkpoint", help="Model checkpoint(s); several = ensemble.")
    ],
    out_dir: Annotated[Path, typer.Option(help="Where the overlays go.")] = Path(
        "reports/overlays"
    ),
    threshold: Annotated[
        float | None, typer.Option(help="Probability cut (default: the checkpoint's).")
    ] = None,
    tta: Annotated[
        list[str] | None,
        typer.Option(help="hflip, vflip, hvflip; repeatable (default: the checkpoint's)."),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Draw predicted masks on photos, at each photo's own size."""
    written = overlay_images(checkpoint, images, out_dir, threshold, tta, pick_device(device))
    typer.echo(f"wrote {len(written)} overlay(s) to {out_dir}")


@app.command("features")
@one_line_errors
def features_cmd(
    image: Annotated[Path, typer.Argument(help="One photo.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="A hand-written U-Net checkpoint.")
    ] = None,
    model: ModelOption = None,
    config: ConfigOption = None,
    out: Annotated[Path, typer.Option(help="The PNG grid.")] = Path("reports/features.png"),
    channels: Annotated[int, typer.Option(help="Channels shown per feature map.")] = 16,
    columns: Annotated[int, typer.Option(help="Tiles per grid row.")] = 8,
    device: DeviceOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Show the U-Net's first double conv, bottleneck and first up block for one photo."""
    if (checkpoint is None) == (model is None):
        raise PipelineError("features needs exactly one of --checkpoint PATH or --model YAML")
    dev = pick_device(device)
    if checkpoint is not None:
        member = load_ensemble([checkpoint], dev, PredictConfig(channels_last=False)).members[0]
        net, size = member.model, member.size
        source = str(checkpoint)
    else:
        from pipeline.models.factory import build_model

        cfg = cli_config(config, model, overrides)
        torch.manual_seed(cfg.train.seed)
        net, size, source = build_model(cfg.model), (cfg.train.height, cfg.train.width), model
    render_features(net, size, image, out, channels, columns, source, dev)
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
