"""Pictures of what a model does: ``python -m pipeline.visualize overlay|features``.

``overlay``: predicted car masks drawn on any photo, at the photo's own size
(:mod:`pipeline.visualize.overlay`). ``features``: the hand-written U-Net's feature maps for one
photo as a PNG grid (:mod:`pipeline.visualize.features`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline.cli import StageOptions, stage
from pipeline.device import pick_device
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import checkpoint_config, load_model
from pipeline.models.factory import build_model
from pipeline.visualize.features import render_features
from pipeline.visualize.overlay import overlay_images

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])


@stage(app, "device", name="overlay")
def overlay_cmd(
    opts: StageOptions,
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
        typer.Option(help="hflip, or none for no TTA (default: the checkpoint's)."),
    ] = None,
) -> None:
    """Draw predicted masks on photos, at each photo's own size."""
    views = None if tta is None else [t for t in tta if t != "none"]
    written = overlay_images(checkpoint, images, out_dir, threshold, views,
                             pick_device(opts.device))
    typer.echo(f"wrote {len(written)} overlay(s) to {out_dir}")


@stage(app, "config", "model", "device", "overrides", name="features")
def features_cmd(
    opts: StageOptions,
    image: Annotated[Path, typer.Argument(help="One photo.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="A hand-written U-Net checkpoint.")
    ] = None,
    out: Annotated[Path, typer.Option(help="The PNG grid.")] = Path("reports/features.png"),
    channels: Annotated[int, typer.Option(help="Channels shown per feature map.")] = 16,
    columns: Annotated[int, typer.Option(help="Tiles per grid row.")] = 8,
) -> None:
    """Show the U-Net's first double conv, bottleneck and first up block for one photo."""
    if (checkpoint is None) == (opts.model is None):
        raise PipelineError("features needs exactly one of --checkpoint PATH or --model YAML")
    dev = pick_device(opts.device)
    if checkpoint is not None:
        net, ckpt = load_model(checkpoint, dev)
        trained = checkpoint_config(ckpt).train
        size, source = (trained.height, trained.width), str(checkpoint)
    else:
        cfg = opts.cfg()
        torch.manual_seed(cfg.train.seed)
        net, size, source = build_model(cfg.model), (cfg.train.height, cfg.train.width), opts.model
    render_features(net, size, image, out, channels, columns, source, dev)
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
