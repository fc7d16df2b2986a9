"""``python -m pipeline.benchmark predict``: the inference engine against a naive loop, same
model, same full-size images, same run.

The naive loop is the common Kaggle kernel: one image at a time through PIL, one forward pass
per flip, each probability map upsampled on the CPU with cv2, numpy RLE. The engine is
:mod:`pipeline.inference.engine` with its settings (``predict.*``): batches, DataLoader workers decoding
while the model runs, channels_last, autocast, flips flipped back and averaged before one
upsampling, RLE on the device. Reported: images/s of both and their ratio (the engine also in
fp32, to separate what mixed precision adds), the masks' agreement (mean Dice between the two),
the main process's peak memory when predicting 100 and 400 images (flat: nothing accumulates),
and the projected hours for Kaggle's 100,064 test images.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import typer
from PIL import Image

from pipeline import rle
from pipeline.atomic import write_json
from pipeline.cli import (
    ConfigOption,
    ModelOption,
    OverridesArgument,
    config_paths,
    stage_config,
)
from pipeline.config import (
    FULL_HEIGHT,
    FULL_WIDTH,
    Config,
    DemoConfig,
    default,
    load_config,
)
from pipeline.data.demo import generate_demo
from pipeline.data.io import image_size
from pipeline.data.transforms import normalize
from pipeline.device import peak_memory_mib, resolve_precision
from pipeline.dice import dice_per_image
from pipeline.errors import PipelineError, one_line_errors
from pipeline.inference.encode import iter_rles
from pipeline.inference.engine import iter_predictions, load_ensemble, prepare_engine, tta_dims
from pipeline.models.checkpoint import load_model, save_checkpoint
from pipeline.models.factory import build_model

TEST_IMAGES = 100_064


# --------------------------------------------------------------------------- the baseline


def naive_predict(model, path: str | Path, size: tuple[int, int], tta: Sequence[str],
                  threshold: float = 0.5, out_shape=(FULL_HEIGHT, FULL_WIDTH)) -> str:
    """The naive loop for one image: RLE of the TTA-averaged, CPU-upsampled probability (the
    forward passes run on the model's device)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
    x = normalize(rgb)[None].to(next(model.parameters()).device)
    probs = []
    for dims in tta_dims(tta):
        with torch.no_grad():
            logits = model(x.flip(dims) if dims else x)
        logits = logits.flip(dims) if dims else logits
        p = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
        probs.append(cv2.resize(p, (out_shape[1], out_shape[0]), interpolation=cv2.INTER_LINEAR))
    mask = (np.mean(probs, axis=0) > threshold).astype(np.uint8)
    return rle.encode_reference(mask)


def ensemble_rles(ensemble, paths: Sequence[Path], out_shape: tuple[int, int]) -> list[str]:
    """The engine end to end, as a submission runs it: JPEG files to RLE strings."""
    preds = iter_predictions(ensemble, paths, out_shape)
    return [r for batch in iter_rles(preds, ensemble.engine) for r in batch.rles]


def engine_rles(ckpt: Path, paths: Sequence[Path], cfg: Config, device: str = "cpu") -> list[str]:
    """The engine's RLE strings for ``paths`` (a fresh ensemble load, like a real run)."""
    ensemble = load_ensemble([ckpt], prepare_engine(cfg.predict, device))
    return ensemble_rles(ensemble, paths, (FULL_HEIGHT, FULL_WIDTH))


# --------------------------------------------------------------------------- inputs


def full_size_images(data_root: Path | None, work: Path, want: int) -> list[Path]:
    """Up to ``want`` 1918x1280 JPEGs from ``data_root`` (test/, then train/), else 16 demo
    images rendered at full size into ``work``."""
    found: list[Path] = []
    if data_root is not None:
        for sub in ("test", "train"):
            for p in sorted((data_root / sub).glob("*.jpg")):
                if image_size(p) == (FULL_WIDTH, FULL_HEIGHT):
                    found.append(p)
                if len(found) >= want:
                    return found
    if found:
        return found
    root = generate_demo(work / "demo", default(DemoConfig, train_cars=0, test_cars=1, seed=0))
    return sorted((root / "test").glob("*.jpg"))


def cycle(paths: Sequence[Path], n: int) -> list[Path]:
    """``n`` paths, repeating ``paths`` as needed (the engine does not care about repeats)."""
    return [paths[i % len(paths)] for i in range(n)]


def make_checkpoint(cfg: Config, height: int, width: int, path: Path, seed: int = 0) -> Path:
    """An untrained model of ``cfg.model`` saved as a checkpoint trained at height x width."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, height=height,
                                                             width=width))
    return save_checkpoint(path, build_model(cfg.model), cfg)


# --------------------------------------------------------------------------- measurements


def peak_memory(ckpt: Path, paths: Sequence[Path], n: int, overrides: Sequence[str],
                config_paths: Sequence[str]) -> dict:
    """Run the engine on ``n`` images in a fresh process; its peak RSS (MB) and time."""
    args = {"ckpt": str(ckpt), "paths": [str(p) for p in paths], "n": n,
            "overrides": list(overrides), "config": list(config_paths)}
    command = [sys.executable, "-m", "pipeline.benchmark.engine_speed", json.dumps(args)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PipelineError(f"memory run on {n} images failed: "
                            f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_child(args: dict) -> None:
    cfg = load_config(args["config"], args["overrides"])
    paths = cycle([Path(p) for p in args["paths"]], args["n"])
    t0 = time.perf_counter()
    rles = engine_rles(Path(args["ckpt"]), paths, cfg)
    seconds = time.perf_counter() - t0
    assert len(rles) == args["n"]
    mib = peak_memory_mib(torch.device("cpu"))  # this fresh process's peak resident size
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps({"images": args["n"], "peak_rss_mb": mib,
                      "worker_peak_rss_mb": workers / 1024, "seconds": seconds}))


def mean_agreement(a: Sequence[str], b: Sequence[str], shape=(FULL_HEIGHT, FULL_WIDTH)) -> float:
    """Mean Dice between two lists of RLE masks."""
    scores = [dice_per_image(rle.decode(x, shape)[None], rle.decode(y, shape)[None])[0]
              for x, y in zip(a, b)]
    return float(np.mean(scores))


def run_predict_benchmark(
    cfg: Config,
    config_paths: Sequence[str],
    overrides: Sequence[str],
    images: Sequence[Path],
    n_speed: int,
    memory_sizes: Sequence[int],
    height: int,
    width: int,
    work: Path,
    naive_images: int | None = None,
) -> dict:
    """Time the naive loop and the engine on the same ``n_speed`` images and model."""
    ckpt = make_checkpoint(cfg, height, width, work / "bench.pt")
    paths = cycle(images, n_speed)
    model, _ = load_model(ckpt)
    size, tta = (height, width), cfg.predict.tta

    naive_paths = paths[: naive_images or n_speed]
    naive_predict(model, naive_paths[0], size, tta)  # warm-up
    t0 = time.perf_counter()
    naive = [naive_predict(model, p, size, tta, cfg.predict.threshold) for p in naive_paths]
    naive_s = time.perf_counter() - t0

    def timed(c: Config) -> tuple[list[str], float]:
        engine_rles(ckpt, paths[: c.predict.batch_size], c)  # warm-up (workers, autocast)
        start = time.perf_counter()
        out = engine_rles(ckpt, paths, c)
        return out, time.perf_counter() - start

    engine, engine_s = timed(cfg)
    fp32_cfg = dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, precision="fp32"))
    engine32, engine32_s = timed(fp32_cfg)

    precision = resolve_precision(cfg.predict.precision, torch.device("cpu"),
                                  what="predict.precision")
    naive_rate = len(naive_paths) / naive_s
    rate, rate32 = len(paths) / engine_s, len(paths) / engine32_s
    memory = [peak_memory(ckpt, images, n, overrides, config_paths) for n in memory_sizes]
    return {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": cfg.model.label,
        "input_size": [height, width],
        "output_size": [FULL_HEIGHT, FULL_WIDTH],
        "tta": list(tta),
        "images": len(paths),
        "naive_images": len(naive_paths),
        "distinct_files": len(set(images)),
        "engine": {"batch_size": cfg.predict.batch_size, "num_workers": cfg.predict.num_workers,
                   "channels_last": cfg.predict.channels_last,
                   "precision": precision.name},
        "naive_img_per_s": naive_rate,
        "engine_img_per_s": rate,
        "engine_fp32_img_per_s": rate32,
        "speedup": rate / naive_rate,
        "speedup_fp32": rate32 / naive_rate,
        "agreement_dice_vs_naive": mean_agreement(engine[: len(naive)], naive),
        "agreement_dice_fp32_vs_naive": mean_agreement(engine32[: len(naive)], naive),
        "memory": memory,
        "memory_growth_mb": memory[-1]["peak_rss_mb"] - memory[0]["peak_rss_mb"] if memory else 0,
        "projected_hours_test_set": TEST_IMAGES / rate / 3600,
    }


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @one_line_errors
    def predict_command(
        data_root: Annotated[Path | None, typer.Option(
            help="Folder whose test/ or train/ hold 1918x1280 JPEGs (default: 16 demo "
                 "images rendered at full size).")] = None,
        images: Annotated[int, typer.Option(help="Images timed for each method.")] = 24,
        naive_images: Annotated[int | None, typer.Option(
            help="Images for the (slow) naive loop; default: --images.")] = None,
        memory: Annotated[list[int] | None, typer.Option(
            help="Image counts of the peak-memory runs (repeatable).")] = None,
        height: Annotated[int, typer.Option(help="Model input height.")] = 320,
        width: Annotated[int, typer.Option(help="Model input width.")] = 480,
        out: Annotated[Path, typer.Option(help="JSON result.")]
        = Path("reports/benchmark_predict.json"),
        config: ConfigOption = None,
        model: ModelOption = None,
        overrides: OverridesArgument = None,
    ) -> None:
        """Engine vs naive loop: images/s, peak memory at 100 and 400 images, projected hours."""
        cfg = stage_config(config, model, overrides)
        paths = config_paths(config, model)
        sizes = memory if memory is not None else [100, 400]
        with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
            files = full_size_images(data_root, Path(tmp), max(images, 16))
            result = run_predict_benchmark(cfg, paths, overrides or [], files, images, sizes,
                                           height, width, Path(tmp), naive_images)
        result["data_root"] = str(data_root) if data_root else "demo (rendered)"
        write_json(out, result)
        e = result["engine"]
        typer.echo(f"{result['model']} at {height}x{width} -> {FULL_WIDTH}x{FULL_HEIGHT}, "
                   f"tta={result['tta']}, {result['images']} images "
                   f"({result['distinct_files']} files), {result['torch_threads']} threads")
        typer.echo(f"naive loop: {result['naive_img_per_s']:.2f} img/s")
        typer.echo(f"engine ({e['precision']}, batch {e['batch_size']}, {e['num_workers']} "
                   f"workers): {result['engine_img_per_s']:.2f} img/s -> "
                   f"{result['speedup']:.2f}x (fp32 engine: {result['speedup_fp32']:.2f}x); "
                   f"masks agree with the naive loop at Dice "
                   f"{result['agreement_dice_vs_naive']:.4f}")
        for m in result["memory"]:
            typer.echo(f"peak memory, {m['images']} images: {m['peak_rss_mb']:.0f} MB "
                       f"(workers {m['worker_peak_rss_mb']:.0f} MB)")
        typer.echo(f"projected: {result['projected_hours_test_set']:.1f} h for "
                   f"{TEST_IMAGES} test images on this machine")
        typer.echo(f"wrote {out}")


if __name__ == "__main__":
    _memory_child(json.loads(sys.argv[1]))
