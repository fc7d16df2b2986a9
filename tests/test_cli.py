"""The command-line options every stage shares (pipeline.cli) on a tiny Typer app, the config a
stage builds from them (cli.config_paths, cli.stage_config), and every stage declaring the
shared options the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import SHARED, StageOptions, config_paths, stage, stage_config
from pipeline.config import Config, default, load_config
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]

app = typer.Typer(add_completion=False)


@stage(app, "config", "model", "data_root", "device", "progress", "overrides")
def show(opts: StageOptions, extra: int = 0) -> None:
    """Print what the shared options parsed to, and the config they build."""
    cfg = opts.cfg()
    typer.echo(json.dumps({
        "config": [str(p) for p in opts.config] if opts.config else None, "model": opts.model,
        "device": opts.device, "progress": opts.progress, "overrides": opts.overrides,
        "paths": config_paths(opts.config, opts.model), "label": cfg.model.label,
        "epochs": cfg.train.epochs, "lr": cfg.train.lr, "root": cfg.data.root, "extra": extra,
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
    assert out["paths"] == [] and out["root"] == default(Config).data.root


def test_config_is_repeatable_in_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train:\n  epochs: 3\n  lr: 0.1\n")
    b.write_text("train:\n  epochs: 5\n")
    out = run("-c", str(a), "--config", str(b))
    assert out["config"] == [str(a), str(b)] and out["paths"] == [str(a), str(b)]
    assert out["epochs"] == 5 and out["lr"] == 0.1  # later files win, key by key


def test_model_by_name_or_path(tmp_path):
    by_name = run("-m", "unet_small")
    assert by_name["paths"] == ["configs/models/unet_small.yaml"]
    assert by_name["label"] == load_config([REPO / "configs/models/unet_small.yaml"]).model.label
    model = tmp_path / "mine.yaml"
    model.write_text("model:\n  name: mine\n")
    by_path = run("--model", str(model))
    assert by_path["paths"][-1] == str(model) and by_path["label"] == "mine"


def test_overrides_device_and_progress(tmp_path):
    out = run("--device", "cuda:1", "--no-progress", "--data-root", "d", "train.epochs=2",
              "model.name=x", "data.root=ignored")
    assert out["device"] == "cuda:1" and out["progress"] is False
    assert out["overrides"] == ["train.epochs=2", "model.name=x", "data.root=ignored"]
    assert out["epochs"] == 2 and out["label"] == "x" and out["root"] == "d"  # --data-root wins
    assert run("--progress")["progress"] is True


def test_a_bad_override_is_one_error_line():
    result = CliRunner().invoke(app, ["train.epoch=2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: override 'train.epoch=2': unknown")


def test_config_paths_and_the_stage_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults are the package's, wherever the command runs
    assert config_paths(None, None) == []
    assert config_paths(None, "unet") == ["configs/models/unet.yaml"]
    assert config_paths([Path("x.yaml")], "dir/m.yml") == ["x.yaml", "dir/m.yml"]
    assert stage_config(None, None, ["train.epochs=4"]) == load_config([], ["train.epochs=4"])
    assert stage_config() == default(Config)
    with pytest.raises(PipelineError, match="configs/models/nope.yaml: config file not found"):
        stage_config(None, "nope")


STAGES = ["data", "folds", "train", "evaluate", "submit", "refine"]


def click_params(stage_name: str) -> dict:
    import importlib

    app = importlib.import_module(f"pipeline.{stage_name}.__main__").app
    return {p.name: p for p in typer.main.get_command(app).params}


@pytest.mark.parametrize("stage_name", STAGES)
def test_every_stage_takes_the_shared_options(stage_name):
    """The same names on every stage that reads a config: -c/--config and the overrides, and
    --data-root; --progress on every stage with a long job; -m on every stage that builds a
    model; --device on every stage that computes; --folds where folds are read."""
    params = click_params(stage_name)
    needs = {"config", "overrides", "data_root"}
    needs |= {"progress"} if stage_name != "folds" else set()
    needs |= {"model", "device"} if stage_name not in ("data", "folds") else set()
    needs |= {"folds"} if stage_name in ("train", "evaluate", "refine") else set()
    assert needs <= set(params), (stage_name, needs - set(params))


@pytest.mark.parametrize("name", [n for n in SHARED if n != "data_root"])
def test_a_shared_option_is_the_same_on_every_stage(name):
    """Declared once: the same flags, default and help wherever a stage takes it (data and
    folds keep their older --out for the root and the folds file they write)."""
    found = [click_params(s)[name] for s in STAGES if name in click_params(s)]
    if name == "folds":
        found = [p for p in found if "--out" not in p.opts]
    assert found, name
    first = found[0]
    for param in found[1:]:
        assert (param.opts, param.default, getattr(param, "help", None)) == \
            (first.opts, first.default, getattr(first, "help", None)), name


def test_a_stage_calls_its_function_with_the_options_first():
    out = run("--extra", "3", "-m", "unet")
    assert out["extra"] == 3 and out["label"] == "unet"
    with pytest.raises(ValueError, match="unknown shared options"):
        stage(typer.Typer(), "colour")
