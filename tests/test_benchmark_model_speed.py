"""``python -m pipeline.benchmark models``: every model measured on one device, the JSON
result, and the Markdown table of speeds relative to the first model."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from pipeline.benchmark.model_speed import markdown_table, register


def test_benchmark_models_command(tmp_path):
    cfg_a = tmp_path / "a.yaml"
    cfg_a.write_text("model:\n  name: tiny-a\n  arch: unet\n  base_width: 4\n  depth: 2\n")
    cfg_b = tmp_path / "b.yaml"
    cfg_b.write_text("model:\n  name: tiny-b\n  arch: unet\n  base_width: 2\n  depth: 2\n")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "models" a subcommand
    out = tmp_path / "reports" / "bench.json"
    args = [
        "models",
        "--models",
        str(cfg_a),
        "--models",
        str(cfg_b),
        "--height",
        "24",
        "--width",
        "36",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "model.classes=2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| tiny-a |" in result.output and "| tiny-b |" in result.output
    data = json.loads(out.read_text())
    assert data["height"] == 24 and data["device"].startswith("cpu")
    rows = data["results"]
    assert [r["model"] for r in rows] == ["tiny-a", "tiny-b"]
    for row in rows:
        assert row["status"] == "ok", row["status"]
        assert row["forward_img_per_s"] > 0 and row["train_img_per_s"] > 0
        assert row["forward_peak_mib"] is None  # CPU: no GPU memory to report
        assert row["model_config"]["classes"] == 2
    assert rows[0]["params"] > rows[1]["params"]

    bad = CliRunner().invoke(app, ["models", "--models", str(tmp_path / "nope.yaml")])
    assert bad.exit_code == 1


def test_benchmark_table_gives_ratios_to_the_first_model():
    result = {"device": "cpu", "height": 8, "width": 8, "batch_size": 2, "precision": "fp32"}
    result["results"] = [
        {
            "model": "a",
            "params": 2e6,
            "status": "ok",
            "forward_img_per_s": 40.0,
            "train_img_per_s": 10.0,
            "forward_peak_mib": 100.0,
            "train_peak_mib": 300.0,
        },
        {
            "model": "b",
            "params": 1e6,
            "status": "ok",
            "forward_img_per_s": 20.0,
            "train_img_per_s": 30.0,
            "forward_peak_mib": None,
            "train_peak_mib": None,
        },
        {"model": "c", "params": 5e5, "status": "train: out of memory", "forward_img_per_s": 80.0},
    ]
    lines = markdown_table(result).splitlines()
    assert "relative to a" in lines[0]
    assert lines[4] == "| a | 2.00 | 40.0 | 1.00 | 10.0 | 1.00 | 100 | 300 | ok |"
    assert lines[5] == "| b | 1.00 | 20.0 | 0.50 | 30.0 | 3.00 | - | - | ok |"
    assert lines[6] == "| c | 0.50 | 80.0 | 2.00 | - | - | - | - | train: out of memory |"


def test_benchmark_models_precision_and_config_options(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  classes: 3\n")  # layered under every model file, as in a stage
    model = tmp_path / "m.yaml"
    model.write_text("model:\n  name: tiny\n  arch: unet\n  base_width: 2\n  depth: 2\n")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "bench.json"
    common = ["models", "--models", str(model), "--height", "16", "--width", "24",
              "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
              "--out", str(out)]
    result = CliRunner().invoke(app, [*common, "--precision", "fp32", "--config", str(base)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["precision"] == "fp32"  # no ", channels_last" suffix on a CPU
    assert data["results"][0]["model_config"]["classes"] == 3
    assert data["results"][0]["status"] == "ok"

    bad = CliRunner().invoke(app, [*common, "--precision", "fp8"])
    assert bad.exit_code == 1
    assert "--precision must be one of auto, fp32, bf16, fp16, got 'fp8'" in bad.output
