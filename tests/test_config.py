"""Config: one set of defaults (configs/base.yaml, restated by no other file), YAML layering
with ``extends``, overrides, unknown keys rejected, every shipped config loads, and the
runtime-only settings that never change a result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    DEFAULTS,
    Config,
    DataConfig,
    ModelConfig,
    PredictConfig,
    TrainConfig,
    default,
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
    cfg = load_config([base, model], ["train.lr=1e-2", "predict.tta=[]", "model.name="])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(0.01)
    assert cfg.model.arch == "Unet" and cfg.model.label == "Unet-resnet18"
    assert cfg.predict.tta == []
    assert cfg.train.batch_size == default(Config).train.batch_size  # untouched default


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
    assert result_keys(ModelConfig) == [f for f in to_dict(default(ModelConfig))]  # none runtime
    fields = PredictConfig.__dataclass_fields__
    assert fields["num_workers"].metadata["runtime"] and "runtime" not in fields["tta"].metadata


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
    from pipeline.train.recipe import plan_phases

    cfg = load_config([profile])
    for phase in plan_phases(cfg, Roots().run("m", 0)):  # every phase of train.progressive
        build_loss(phase.cfg.train)
        crop_size(phase.cfg.train)
        assert phase.cfg.train.epochs >= 1 and phase.cfg.train.time_budget_min == 0  # fixed work
    assert cfg.train.precision in PRECISIONS and cfg.predict.precision in PRECISIONS
    # dvc.yaml reads repro.* from configs/base.yaml only: in a profile it would do nothing
    assert "repro" not in (yaml.safe_load(profile.read_text()) or {})


# --------------------------------------------------------------------------- one set of defaults


def test_the_defaults_are_base_yaml_and_the_dataclasses_hold_none():
    """Every setting has its value in configs/base.yaml and nowhere else: no dataclass field
    carries a default, and base.yaml names every field (a missing or extra key fails)."""
    for cls in (Config, *(type(getattr(default(Config), f)) for f in Config.__dataclass_fields__)):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{f.name} has a default of its own; write it in base.yaml"
    written = yaml.safe_load(DEFAULTS.read_text())
    assert to_dict(default(Config)).keys() == written.keys()
    for section, values in written.items():
        assert set(values) == set(to_dict(getattr(default(Config), section))), section


def test_a_defaults_file_missing_a_key_is_one_error_line(tmp_path, monkeypatch):
    from pipeline import config

    values = yaml.safe_load(DEFAULTS.read_text())
    del values["train"]["lr"]
    broken = tmp_path / "base.yaml"
    broken.write_text(yaml.safe_dump(values))
    monkeypatch.setattr(config, "DEFAULTS", broken)
    with pytest.raises(PipelineError, match=r"base.yaml.*missing key 'lr'"):
        load_config()


def own_values(path: Path) -> dict:
    values = yaml.safe_load(path.read_text()) or {}
    values.pop("extends", None)
    return values


def leaves(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("progressive",):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


SHIPPED = sorted([*REPO.glob("configs/profiles/*.yaml"), *REPO.glob("configs/models/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_profile_or_model_file_restates_a_default(path):
    """A file holds only what differs from what it is layered on (the defaults and the files
    it extends); a model file's ``name`` is its identity and may equal the default's."""
    from pipeline.config import layers

    parents = [p for p, _ in layers(path)][:-1]
    below = to_dict(load_config(parents))
    restated = []
    for key, value in leaves(own_values(path)):
        node = below
        for part in key.split("."):
            node = node[part]
        if node == value and key != "model.name":
            restated.append(key)
    assert not restated, f"{path.name} restates {restated}: drop them"


def test_a_file_may_extend_another_of_its_folder(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochs: 3\n  lr: 0.01\n")
    (tmp_path / "b.yaml").write_text("extends: a\ntrain:\n  lr: 0.02\n")
    cfg = load_config([tmp_path / "b.yaml"])
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.02)
    (tmp_path / "loop.yaml").write_text("extends: loop\n")
    with pytest.raises(PipelineError, match="loops back"):
        load_config([tmp_path / "loop.yaml"])
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(PipelineError, match="extends 'nowhere'.*does not exist"):
        load_config([tmp_path / "orphan.yaml"])


def test_phase_keys_come_from_the_field_metadata():
    from pipeline.config import phase_keys
    from pipeline.train.recipe import PHASE_KEYS

    assert PHASE_KEYS == tuple(phase_keys(TrainConfig))
    assert {"height", "width", "epochs", "lr", "loss", "ema"} <= set(PHASE_KEYS)
    assert not {"seed", "precision", "init_from", "progressive", "num_workers"} & set(PHASE_KEYS)


def test_the_recipe_profile_is_the_measured_command_sequence():
    """cpu_real_recipe.yaml = reports/real/recipes.md row 8: cpu_real (phase 0), then 4 epochs
    at 384x576 from its best.pt with lr 0.0005, warm-up 0.1, the weight average 0.99 and the
    boundary loss (phase 1), then the 400-step refiner applied in evaluation."""
    from pipeline.runs import Roots
    from pipeline.train.recipe import plan_phases

    profiles = REPO / "configs" / "profiles"
    recipe = load_config([profiles / "cpu_real_recipe.yaml"])
    cpu_real = load_config([profiles / "cpu_real.yaml"])
    first, second = plan_phases(recipe, Roots().run("m", 0))
    assert first.cfg.train == cpu_real.train
    assert second.cfg.train == dataclasses.replace(
        cpu_real.train, height=384, width=576, epochs=4, lr=0.0005, warmup_epochs=0.1,
        ema=0.99, loss="boundary_bce_dice", init_from=str(first.run.best))
    assert recipe.folds == cpu_real.folds and recipe.model == cpu_real.model
    assert recipe.refine.train and recipe.refine.steps == 400 and recipe.predict.refiner
    assert dataclasses.replace(recipe.refine, train=False, steps=1500, log_every=50) == \
        load_config().refine  # otherwise the defaults the measured refiner used
