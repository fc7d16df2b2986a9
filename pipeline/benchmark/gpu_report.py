"""The ``gpu`` command of ``python -m pipeline.benchmark`` and its report: the measurements of
:mod:`pipeline.benchmark.gpu_speed` as JSON and as two Markdown tables (training, prediction)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.atomic import write_json, write_text
from pipeline.benchmark.gpu_speed import GPU_MODELS, GpuPlan, run_gpu_benchmark
from pipeline.benchmark.table import command_line
from pipeline.cli import ConfigOption, DeviceOption, OverridesArgument
from pipeline.errors import PipelineError, one_line_errors


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def gpu_markdown(result: dict) -> str:
    """A training row per model, size and precision; a prediction row per model and ensemble."""
    pred = result["prediction"]
    lines = [
        (f"GPU benchmark on {result['device_name']} (CPU: {result['cpu']}), torch "
         f"{result['torch']}, auto precision = {result['auto_precision']}"),
        f"`{result['command']}`" if result["command"] else "",
        "",
        "Training step (forward, backward, AdamW) on random batches:",
        "",
        ("| model | size | precision | batch | train img/s | train peak MiB | forward img/s "
         "| status |"),
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in result["training"]:
        lines.append(
            f"| {r['model']} | {r['height']}x{r['width']} | {r['precision']} | {r['batch_size']} "
            f"| {_f(r.get('train_img_per_s'), '.1f')} | {_f(r.get('train_peak_mib'), '.0f')} "
            f"| {_f(r.get('forward_img_per_s'), '.1f')} | {r['status']} |")
    height, width = pred["input_size"]
    lines += [
        "",
        (f"Prediction end to end (JPEG files to RLE strings), {pred['images']} images "
         f"({pred['distinct_files']} files, {pred['data']}) of {pred['output_size'][1]}x"
         f"{pred['output_size'][0]}, model input {height}x{width}, TTA {pred['tta']}, "
         f"{pred['precision']}, batch {pred['batch_size']}, {pred['num_workers']} workers, "
         f"largest component {pred['largest_component']}; busy = compute-only time / "
         "end-to-end time; RLE = masks encoded on a thread overlapping the next batch "
         "(predict.overlap) or in the main thread; naive = one image at a time, PIL, fp32, "
         "cv2 upsampling, numpy RLE:"),
        "",
        ("| model | models | decode | RLE | img/s | compute-only img/s | busy | NVML util % "
         f"| peak MiB | min for {result['test_images']:,} | naive img/s | x naive |"),
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in pred["results"]:
        lines.append(
            f"| {r['model']} | {r['models']} | {r['decode']} "
            f"| {'overlapped' if r.get('overlap', False) else 'main thread'} "
            f"| {r['engine_img_per_s']:.1f} "
            f"| {r['compute_img_per_s']:.1f} | {r['busy_fraction']:.0%} "
            f"| {_f(r['nvml_utilisation'], '.0f')} | {_f(r['peak_mib'], '.0f')} "
            f"| {r['projected_minutes_test_set']:.1f} | {_f(r['naive_img_per_s'], '.2f')} "
            f"| {_f(r['speedup_vs_naive'], '.1f')} |")
    dec = pred["decode"]
    lines += [
        "",
        (f"Decoding alone, JPEG files to device batches at {dec['input_size'][0]}x"
         f"{dec['input_size'][1]} (predict.decode): workers (OpenCV, {dec['num_workers']} "
         f"workers) {dec['workers_img_per_s']:.1f} img/s, device (torchvision.io.decode_jpeg, "
         f"batched) {dec['device_img_per_s']:.1f} img/s = {dec['device_over_workers']:.2f}x; "
         f"pixels differ by at most {dec['max_pixel_difference']} "
         f"({dec['differing_fraction']:.2%} of values)."),
    ]
    return "\n".join(lines)


def write_gpu_report(result: dict, out: Path) -> list[Path]:
    """``out`` (JSON) and the Markdown tables beside it (``.md``)."""
    return [write_json(out, result), write_text(out.with_suffix(".md"), gpu_markdown(result) + "\n")]


def register(app: typer.Typer) -> None:
    @app.command("gpu")
    @one_line_errors
    def gpu_command(
        overrides: OverridesArgument = None,
        models: Annotated[list[Path] | None, typer.Option(
            "--models", help="Model YAMLs (repeat); default: SMP Unet-resnet34 and the U-Net.")]
        = None,
        height: Annotated[int | None, typer.Option(
            help="One size instead of 640x960 and 1280x1918 (with --width).")] = None,
        width: Annotated[int | None, typer.Option(help="See --height.")] = None,
        images: Annotated[int | None, typer.Option(
            help="Images predicted per run (default 512, --quick 128).")] = None,
        ensemble: Annotated[int, typer.Option(help="Models of the ensemble run.")] = 5,
        batch_size: Annotated[int, typer.Option(
            help="Training batch (0: 8 at 640x960, fewer as pixels grow).")] = 0,
        quick: Annotated[bool, typer.Option(
            "--quick", help="Fewer steps and images (noisier).")] = False,
        data_root: Annotated[Path | None, typer.Option(
            help="Predict this folder's 1918x1280 JPEGs (test/, then train/) instead of "
                 "synthetic ones.")] = None,
        device: DeviceOption = None,
        config: ConfigOption = None,
        out: Annotated[Path, typer.Option(help="JSON result; the .md table goes beside it.")]
        = Path("reports/gpu_benchmark.json"),
    ) -> None:
        """Training and end-to-end prediction speed, memory and GPU busy fraction."""
        if (height is None) != (width is None):
            raise PipelineError("--height and --width go together (one size), or neither")
        changes = {"ensemble": ensemble, "batch_size": batch_size}
        if height is not None:
            changes["sizes"] = ((height, width),)
        if images is not None:
            changes["images"] = images
        plan = GpuPlan.quick(**changes) if quick else GpuPlan(**changes)
        result = run_gpu_benchmark(models or list(GPU_MODELS), plan, device=device,
                                   config=config, overrides=overrides or [],
                                   data_root=data_root, command=command_line("gpu"))
        write_gpu_report(result, out)
        typer.echo(gpu_markdown(result))
        typer.echo(f"wrote {out} and {out.with_suffix('.md')}")
