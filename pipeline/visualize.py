"""Pictures of what a model does: ``python -m pipeline.visualize overlay|features``.

``overlay``: predicted car masks drawn on any photo, at the photo's own size
(:mod:`pipeline.visuals.overlay`). ``features``: the hand-written U-Net's feature maps for one
photo as a PNG grid (:mod:`pipeline.visuals.features`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import PredictConfig, cli_config
from pipeline.device import pick_device
from pipeline.errors import PipelineError, one_line_errors
from pipeline.inference.engine import load_ensemble
from pipeline.models.factory import build_model
from pipeline.visuals.features import render_features
from pipeline.visuals.overlay import overlay_images

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
        cfg = cli_config(config, model, overrides)
        torch.manual_seed(cfg.train.seed)
        net, size, source = build_model(cfg.model), (cfg.train.height, cfg.train.width), model
    render_features(net, size, image, out, channels, columns, source, dev)
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
