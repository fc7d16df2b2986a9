"""Config: YAML layering, overrides, unknown keys rejected, every shipped config loads, and the
runtime-only settings that never change a result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    RUNTIME,
    Config,
    DataConfig,
    ModelConfig,
    PredictConfig,
    TrainConfig,
    from_dict,
    load_config,
    model_path,
    parse_override,
    result_keys,
    to_dict,
)
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]


def test_layering_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 3\n  lr: 0.001\nmodel:\n  arch: unet\n")
    model = tmp_path / "model.yaml"
    model.write_text("model:\n  arch: Unet\n  encoder: resnet18\n")
    cfg = load_config([base, model], ["train.lr=1e-2", "predict.tta=[hflip, vflip]"])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(0.01)
    assert cfg.model.arch == "Unet" and cfg.model.label == "Unet-resnet18"
    assert cfg.predict.tta == ["hflip", "vflip"]
    assert cfg.train.batch_size == Config().train.batch_size  # untouched default


def test_unknown_key_names_file_and_suggests(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(PipelineError, match=r"typo.yaml: unknown config key 'train.epoch'.*"
                                            r"did you mean train.epochs"):
        load_config([path])
    with pytest.raises(PipelineError, match="unknown config key 'nope'"):
        load_config([], ["nope.x=1"])


def test_wrong_types_are_rejected():
    with pytest.raises(PipelineError, match="train.epochs: expected int"):
        load_config([], ["train.epochs=three"])
    with pytest.raises(PipelineError, match="expected true or false"):
        load_config([], ["model.skip=maybe"])
    with pytest.raises(PipelineError, match="must look like"):
        load_config([], ["train.epochs"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(PipelineError, match="config file not found"):
        load_config([tmp_path / "absent.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_config([bad])


def test_round_trip_through_dict():
    cfg = load_config([], ["model.arch=FPN", "train.height=64"])
    again = from_dict(Config, to_dict(cfg))
    assert again == cfg
    assert from_dict(ModelConfig, to_dict(cfg.model)) == cfg.model


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    base = REPO / "configs" / "base.yaml"
    cfg = load_config([base, path] if path != base else [base])
    assert isinstance(cfg, Config)


def test_runtime_settings_are_not_result_keys():
    train = result_keys(TrainConfig)
    assert "epochs" in train and "lr" in train
    assert not {"num_workers", "threads", "live"} & set(train)
    assert "cache_dir" not in result_keys(DataConfig) and "root" in result_keys(DataConfig)
    predict = result_keys(PredictConfig)
    assert "batch_size" not in predict and "threshold" in predict
    assert result_keys(ModelConfig) == [f for f in to_dict(ModelConfig())]  # none runtime
    fields = PredictConfig.__dataclass_fields__
    assert fields["num_workers"].metadata == RUNTIME and fields["tta"].metadata == {}


def test_override_values_are_yaml():
    assert parse_override("train.lr=1e-3") == {"train": {"lr": "1e-3"}}  # YAML 1.1: a string
    assert load_config([], ["train.lr=1e-3"]).train.lr == 0.001  # ...accepted as the number
    assert parse_override("predict.tta=[hflip]") == {"predict": {"tta": ["hflip"]}}
    assert parse_override("model.name=") == {"model": {"name": ""}}
    assert parse_override("model.encoder_weights=null") == {"model": {"encoder_weights": None}}


def test_model_path_takes_a_name_or_a_path():
    assert model_path("unet_small") == "configs/models/unet_small.yaml"
    assert model_path("my.yaml") == "my.yaml"
    assert model_path("other/dir/unet") == "other/dir/unet"


@pytest.mark.parametrize("profile", sorted((REPO / "configs" / "profiles").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_profile_loads_with_valid_training_settings(profile):
    # a profile is a recipe: every key must exist and the settings checked before training
    # (loss, precision name, crop inside the training size) must hold
    from pipeline.data.dataset import crop_size
    from pipeline.device import PRECISIONS
    from pipeline.losses import build_loss
    from pipeline.runs import Roots
    from pipeline.training.recipe import plan_phases

    cfg = load_config([REPO / "configs" / "base.yaml", profile])
    for phase in plan_phases(cfg, Roots().run("m", 0)):  # every phase of train.progressive
        build_loss(phase.cfg.train)
        crop_size(phase.cfg.train)
        assert phase.cfg.train.epochs >= 1 and phase.cfg.train.time_budget_min == 0  # fixed work
    assert cfg.train.precision in PRECISIONS and cfg.predict.precision in PRECISIONS
    # dvc.yaml reads benchmark.* from configs/base.yaml only: in a profile it would do nothing
    assert "benchmark" not in (yaml.safe_load(profile.read_text()) or {})


def test_the_recipe_profile_is_the_measured_command_sequence():
    """cpu_real_recipe.yaml = reports/real/recipes.md row 8: cpu_real, then cpu_real_finish from
    its best.pt, then the 400-step refiner applied in evaluation."""
    from pipeline.runs import Roots
    from pipeline.training.recipe import plan_phases

    profiles = REPO / "configs" / "profiles"
    base = [REPO / "configs" / "base.yaml"]
    recipe = load_config(base + [profiles / "cpu_real_recipe.yaml"])
    first, second = plan_phases(recipe, Roots().run("m", 0))
    assert first.cfg.train == load_config(base + [profiles / "cpu_real.yaml"]).train
    finish = load_config(base + [profiles / "cpu_real.yaml", profiles / "cpu_real_finish.yaml"])
    assert second.cfg.train == dataclasses.replace(finish.train, init_from=str(first.run.best))
    assert recipe.folds == finish.folds
    assert recipe.refine.train and recipe.refine.steps == 400 and recipe.predict.refiner
    assert dataclasses.replace(recipe.refine, train=False, steps=1500, log_every=50) == \
        load_config(base).refine  # otherwise the defaults the measured refiner used
