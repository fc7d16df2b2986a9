"""``python -m pipeline.benchmark models``: size and speed of every model config on one device.

For each config: parameters, forward images/s (eval, no grad), training-step images/s
(forward + backward + AdamW step), and on CUDA the peak memory of each. Same input size, batch,
device and precision (``--precision``, resolved as training does) for all, in one run, so the
ratios between models are the result; the absolute numbers only hold for this machine. On CUDA
the inputs are channels_last, as in training.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
import typer
from tqdm import tqdm

from pipeline.atomic import write_json
from pipeline.cli import ConfigOption, DeviceOption, stage_config
from pipeline.config import REPO, ModelConfig, to_dict
from pipeline.device import (
    FP32,
    Precision,
    autocast,
    device_name,
    peak_memory_mib,
    pick_device,
    reset_peak_memory,
    resolve_precision,
    synchronize,
)
from pipeline.errors import PipelineError, one_line_errors
from pipeline.models.factory import build_model, count_parameters

MODEL_DIR = REPO / "configs" / "models"


def seconds_per_step(
    fn: Callable[[], None], steps: int, warmup: int, device: torch.device
) -> float:
    """Median wall time of ``fn`` over ``steps`` timed calls, after ``warmup`` untimed calls (which
    absorb cuDNN autotuning and allocator growth); the median resists a busy machine's spikes."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE for one class, cross-entropy for several: the cost of a real loss, not its value."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    return F.cross_entropy(logits.float(), target)


@dataclass(frozen=True)
class Workload:
    """What is timed: batches of ``batch_size`` random images of ``height`` x ``width``, the
    median of ``steps`` calls after ``warmup`` untimed ones."""

    height: int = 320
    width: int = 480
    batch_size: int = 4
    steps: int = 10
    warmup: int = 2

    def check(self) -> None:
        if min(self.height, self.width, self.batch_size, self.steps) < 1 or self.warmup < 0:
            raise PipelineError("height, width, batch size and steps must be >= 1, warmup >= 0")


def benchmark_model(cfg: ModelConfig, work: Workload, device: torch.device,
                    precision: Precision = FP32) -> dict:
    """Measure one model; a failure while running (out of memory, a batch too small for batch
    norm) is recorded in ``status`` rather than raised, so the other models still run."""
    height, width, batch_size = work.height, work.width, work.batch_size
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    row = {"model": cfg.label, "arch": cfg.arch, "params": count_parameters(model)}
    if cfg.arch != "unet":
        row["encoder"] = cfg.encoder
    cuda = device.type == "cuda"
    layout = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = torch.randn(batch_size, cfg.in_channels, height, width, device=device)
    x = x.contiguous(memory_format=layout)
    if cfg.classes == 1:
        target = (torch.rand(batch_size, 1, height, width, device=device) > 0.5).float()
    else:
        target = torch.randint(0, cfg.classes, (batch_size, height, width), device=device)

    def forward() -> None:
        with torch.inference_mode(), autocast(precision, device):
            model(x)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            logits = model(x)
        _loss(logits, target).backward()
        optimizer.step()

    row["status"] = "ok"
    for phase, fn, train in (("forward", forward, False), ("train", train_step, True)):
        model.train(train)
        if cuda:
            torch.cuda.empty_cache()
        reset_peak_memory(device)
        try:
            seconds = seconds_per_step(fn, work.steps, work.warmup, device)
        except torch.cuda.OutOfMemoryError:
            row["status"] = f"{phase}: out of memory"
            break
        except (RuntimeError, ValueError) as exc:
            row["status"] = f"{phase}: {(str(exc).strip().splitlines() or ['error'])[0]}"
            break
        row[f"{phase}_ms_per_batch"] = 1e3 * seconds
        row[f"{phase}_img_per_s"] = batch_size / seconds
        row[f"{phase}_peak_mib"] = peak_memory_mib(device) if cuda else None
    return row


def load_model_configs(paths: list[Path], overrides: list[str] = (),
                       config: list[Path] | None = None) -> list[ModelConfig]:
    """``cfg.model`` of each file, layered on the ``--config`` files as every stage does."""
    return [stage_config(config, str(p), overrides).model for p in paths]


def run_models_benchmark(
    paths: list[Path],
    work: Workload,
    *,
    device: str | None = None,
    precision: str = "auto",
    overrides: list[str] = (),
    config: list[Path] | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> dict:
    """Benchmark each model config; the JSON (if ``out``) is rewritten after every model, so an
    interrupted run keeps what it measured."""
    work.check()
    configs = load_model_configs(paths, overrides, config)  # all parse before the first run
    dev = pick_device(device)
    prec = resolve_precision(precision, dev, what="--precision")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
    result = {
        "device": device_name(dev),
        **dataclasses.asdict(work),
        "precision": prec.name + (" autocast, channels_last" if dev.type == "cuda" else ""),
        "torch": torch.__version__,
        "results": [],
    }
    for path, cfg in tqdm(list(zip(paths, configs)), desc="models", disable=not progress):
        row = benchmark_model(cfg, work, dev, prec)
        row["config"] = str(path)
        row["model_config"] = to_dict(cfg)
        result["results"].append(row)
        if out is not None:
            write_json(out, result)
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(result: dict) -> str:
    """One row per model; the ``x`` columns are speeds relative to the first model."""
    rows = result["results"]
    base = rows[0] if rows else {}
    lines = [
        (
            f"Models on {result['device']}, {result['height']}x{result['width']}, batch "
            f"{result['batch_size']}, {result['precision']}; x = speed relative to "
            f"{base.get('model', '-')}"
        ),
        "",
        (
            "| model | params (M) | forward img/s | x | train img/s | x | forward peak MiB "
            "| train peak MiB | status |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratios = []
        for phase in ("forward", "train"):
            value, ref = row.get(f"{phase}_img_per_s"), base.get(f"{phase}_img_per_s")
            ratios.append(value / ref if value and ref else None)
        lines.append(
            f"| {row['model']} | {row['params'] / 1e6:.2f} "
            f"| {_fmt(row.get('forward_img_per_s'), '.1f')} | {_fmt(ratios[0], '.2f')} "
            f"| {_fmt(row.get('train_img_per_s'), '.1f')} | {_fmt(ratios[1], '.2f')} "
            f"| {_fmt(row.get('forward_peak_mib'), '.0f')} "
            f"| {_fmt(row.get('train_peak_mib'), '.0f')} "
            f"| {row['status']} |"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("models")
    @one_line_errors
    def models_command(
        overrides: Annotated[
            list[str] | None, typer.Argument(help="key=value overrides for every model.")
        ] = None,
        models: Annotated[
            list[Path] | None,
            typer.Option(
                "--models",
                "-m",
                help="Model config YAMLs (repeat); default: all in configs/models.",
            ),
        ] = None,
        height: Annotated[int, typer.Option(help="Input height.")] = 320,
        width: Annotated[int, typer.Option(help="Input width.")] = 480,
        batch_size: Annotated[int, typer.Option(help="Images per step.")] = 4,
        steps: Annotated[int, typer.Option(help="Timed steps per phase (median).")] = 10,
        warmup: Annotated[int, typer.Option(help="Untimed steps before each phase.")] = 2,
        device: DeviceOption = None,
        precision: Annotated[str, typer.Option(
            help="auto (the fastest native one), fp32, bf16, fp16.")] = "auto",
        config: ConfigOption = None,
        out: Annotated[Path, typer.Option(help="JSON result.")] = Path(
            "reports/benchmark_models.json"
        ),
    ) -> None:
        """Parameters, forward and training-step images/s and peak GPU memory of each model."""
        paths = list(models) if models else sorted(MODEL_DIR.glob("*.yaml"))
        if not paths:
            raise PipelineError(f"{MODEL_DIR}: no model configs found; pass --models FILE.yaml")
        work = Workload(height, width, batch_size, steps, warmup)
        result = run_models_benchmark(paths, work, device=device, precision=precision,
                                      overrides=overrides or [], config=config, out=out)
        typer.echo(markdown_table(result))
        typer.echo(f"wrote {out}")
