"""The command-line options every stage shares (pipeline.cli) on a tiny Typer app, and the
config a stage builds from them (config.cli_paths, config.cli_config)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import (
    ConfigOption,
    DeviceOption,
    ModelOption,
    OverridesArgument,
    ProgressOption,
)
from pipeline.config import Config, cli_config, cli_paths, load_config
from pipeline.errors import PipelineError, one_line_errors

REPO = Path(__file__).resolve().parents[1]

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
def show(
    config: ConfigOption = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    progress: ProgressOption = True,
    overrides: OverridesArgument = None,
) -> None:
    """Print what the shared options parsed to, and the config they build."""
    cfg = cli_config(config, model, overrides)
    typer.echo(json.dumps({
        "config": [str(p) for p in config] if config else None, "model": model,
        "device": device, "progress": progress, "overrides": overrides,
        "paths": cli_paths(config, model), "label": cfg.model.label, "epochs": cfg.train.epochs,
        "lr": cfg.train.lr,
    }))


def run(*args: str, cwd: Path = REPO) -> dict:
    old = os.getcwd()
    os.chdir(cwd)  # configs/base.yaml and configs/models/ are found relative to the cwd
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_defaults():
    out = run()
    assert out["config"] is None and out["model"] is None and out["device"] is None
    assert out["progress"] is True and out["overrides"] is None
    assert out["paths"] == ["configs/base.yaml"]


def test_config_is_repeatable_in_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train:\n  epochs: 3\n  lr: 0.1\n")
    b.write_text("train:\n  epochs: 5\n")
    out = run("-c", str(a), "--config", str(b))
    assert out["config"] == [str(a), str(b)] and out["paths"] == [str(a), str(b)]
    assert out["epochs"] == 5 and out["lr"] == 0.1  # later files win, key by key


def test_model_by_name_or_path(tmp_path):
    by_name = run("-m", "unet_small")
    assert by_name["paths"] == ["configs/base.yaml", "configs/models/unet_small.yaml"]
    assert by_name["label"] == load_config([REPO / "configs/models/unet_small.yaml"]).model.label
    model = tmp_path / "mine.yaml"
    model.write_text("model:\n  name: mine\n")
    by_path = run("--model", str(model))
    assert by_path["paths"][-1] == str(model) and by_path["label"] == "mine"


def test_overrides_device_and_progress(tmp_path):
    out = run("--device", "cuda:1", "--no-progress", "train.epochs=2", "model.name=x")
    assert out["device"] == "cuda:1" and out["progress"] is False
    assert out["overrides"] == ["train.epochs=2", "model.name=x"]
    assert out["epochs"] == 2 and out["label"] == "x"
    assert run("--progress")["progress"] is True


def test_a_bad_override_is_one_error_line():
    result = CliRunner().invoke(app, ["train.epoch=2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: override 'train.epoch=2': unknown")


def test_cli_paths_without_a_base_config_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_paths() == []
    assert cli_paths(None, "unet") == ["configs/models/unet.yaml"]
    assert cli_paths([Path("x.yaml")], "dir/m.yml") == ["x.yaml", "dir/m.yml"]
    assert cli_config(None, None, ["train.epochs=4"]) == load_config([], ["train.epochs=4"])
    assert cli_config() == Config()
    with pytest.raises(PipelineError, match="configs/models/nope.yaml: config file not found"):
        cli_config(None, "nope")
