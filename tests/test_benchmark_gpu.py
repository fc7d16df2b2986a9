"""``python -m pipeline.benchmark gpu`` at a tiny size on the CPU: the real model configs (shrunk by
overrides), every JSON field, speeds that are positive and ratios that agree with each other,
and the Markdown tables beside the JSON."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from pipeline.benchmark.gpu_report import register
from pipeline.benchmark.gpu_speed import GpuPlan, train_precisions
from pipeline.device import resolve_precision

TINY = ["--device", "cpu", "--height", "64", "--width", "96", "--images", "4",
        "--ensemble", "2", "--batch-size", "2", "--quick"]
# the default models (configs/models/smp_unet_resnet34.yaml, unet.yaml), made small
SHRINK = ["predict.num_workers=0", "model.base_width=8", "model.depth=2",
          "model.encoder=resnet18"]
TRAIN_FIELDS = {"model", "params", "height", "width", "batch_size", "precision", "status",
                "train_img_per_s", "train_peak_mib", "forward_img_per_s", "forward_peak_mib"}
PREDICT_FIELDS = {"model", "models", "decode", "overlap", "engine_img_per_s",
                  "compute_img_per_s", "busy_fraction", "nvml_utilisation", "peak_mib", "projected_minutes_test_set",
                  "naive_img_per_s", "naive_images", "speedup_vs_naive"}


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "gpu" a subcommand
    return app


def test_benchmark_gpu_on_a_cpu_at_a_tiny_size(tmp_path):
    out = tmp_path / "reports" / "gpu_benchmark.json"
    result = CliRunner().invoke(_app(), ["gpu", *TINY, "--out", str(out), *SHRINK])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"device", "device_name", "cpu", "torch", "cuda", "auto_precision", "command",
            "plan", "test_images", "training", "prediction"} <= set(data)
    assert data["device"] == "cpu" and data["cuda"] is None and data["test_images"] == 100_064
    assert data["command"].startswith("python -m pipeline.benchmark")
    assert data["plan"]["sizes"] == [[64, 96]] and data["plan"]["steps"] == 3  # --quick

    precisions = train_precisions(torch.device("cpu"))
    assert precisions[-1] == "fp32" and "fp16" not in precisions  # fp16 needs CUDA
    train = data["training"]
    assert [(r["model"], r["precision"]) for r in train] == [
        (m, p) for m in ("smp_unet_resnet34", "unet") for p in precisions]
    for row in train:
        assert TRAIN_FIELDS <= set(row) and row["status"] == "ok", row
        assert row["train_img_per_s"] > 0 and row["forward_img_per_s"] > 0
        assert (row["height"], row["width"], row["batch_size"]) == (64, 96, 2)
        assert row["train_peak_mib"] is None  # no device memory on a CPU

    pred = data["prediction"]
    assert pred["input_size"] == pred["output_size"] == [64, 96] and pred["tta"] == ["hflip"]
    assert pred["images"] == 4 and pred["data"].startswith("synthetic")
    assert pred["precision"] == resolve_precision("auto", torch.device("cpu")).name
    rows = {(r["model"], r["models"], r["decode"], r["overlap"]): r for r in pred["results"]}
    # predict.overlap is on by default; the first model runs once more without it
    assert set(rows) == {(m, k, "workers", True) for m in ("smp_unet_resnet34", "unet")
                         for k in (1, 2)} | {("smp_unet_resnet34", 1, "device", True),
                                             ("smp_unet_resnet34", 1, "workers", False)}
    for (model, members, decode, overlap), r in rows.items():
        assert PREDICT_FIELDS <= set(r)
        assert r["engine_img_per_s"] > 0 and r["compute_img_per_s"] > 0
        # busy = compute-only time / end-to-end time of the same images
        assert r["busy_fraction"] == pytest.approx(r["engine_img_per_s"] / r["compute_img_per_s"])
        assert r["projected_minutes_test_set"] == pytest.approx(
            100_064 / r["engine_img_per_s"] / 60)
        assert r["nvml_utilisation"] is None and r["peak_mib"] is None
        if members == 1 and decode == "workers" and overlap:
            assert r["naive_img_per_s"] > 0 and r["naive_images"] == 4
            assert r["speedup_vs_naive"] == pytest.approx(
                r["engine_img_per_s"] / r["naive_img_per_s"])
        else:
            # (no speed comparison here: timings on a shared CI machine are noise; the
            # benchmark itself reports them)
            assert r["naive_img_per_s"] is None and r["speedup_vs_naive"] is None
    dec = pred["decode"]
    assert dec["input_size"] == [64, 96] and dec["workers_img_per_s"] > 0
    assert dec["device_over_workers"] == pytest.approx(
        dec["device_img_per_s"] / dec["workers_img_per_s"])
    assert dec["max_pixel_difference"] == 0 == dec["differing_fraction"]  # same libjpeg-turbo

    table = out.with_suffix(".md").read_text()
    assert table == result.output.split("wrote ")[0]
    for model in ("smp_unet_resnet34", "unet"):
        for p in precisions:
            assert f"| {model} | 64x96 | {p} | 2 |" in table
        assert f"| {model} | 1 | workers | overlapped |" in table
        assert f"| {model} | 2 | workers | overlapped |" in table
    assert "| smp_unet_resnet34 | 1 | device | overlapped |" in table
    assert "| smp_unet_resnet34 | 1 | workers | main thread |" in table
    assert "Decoding alone, JPEG files to device batches at 64x96" in table


def test_benchmark_gpu_options_fail_in_one_line(tmp_path):
    app = _app()
    half = CliRunner().invoke(app, ["gpu", "--height", "64", "--out", str(tmp_path / "x.json")])
    assert half.exit_code == 1 and "--height and --width go together" in half.output
    none = CliRunner().invoke(app, ["gpu", *TINY, "--images", "0", "--out",
                                    str(tmp_path / "x.json")])
    assert none.exit_code == 1 and "must be >= 1" in none.output
    assert not (tmp_path / "x.json").exists()


def test_gpu_plan_batches_scale_with_pixels():
    plan = GpuPlan()
    assert plan.train_batch(640, 960) == 8 and plan.train_batch(1280, 1918) == 2
    assert plan.train_batch(64, 96) == 8 and GpuPlan(batch_size=3).train_batch(1280, 1918) == 3
    assert GpuPlan.quick().images == 128 and GpuPlan.quick(images=4).images == 4
