"""``dvc.yaml`` against the code: each stage depends on every module its command imports (so an
edit can never leave a stale result that DVC calls up to date), lists by key exactly the
settings that can change its result, and writes where ``pipeline/runs.py`` says runs live."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from import_graph import REPO, closure, module_file

from pipeline.config import (
    DataConfig,
    DemoConfig,
    FoldsConfig,
    ModelConfig,
    PredictConfig,
    RefineConfig,
    SubmitConfig,
    TrainConfig,
    result_keys,
)
from pipeline.runs import Roots

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
BASE = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())
STAGES = DVC["stages"]


def body(name: str) -> dict:
    stage = STAGES[name]
    return stage.get("do", stage)


def command_module(cmd: str) -> str:
    match = re.search(r"python -m (pipeline[\w.]*)", cmd)
    assert match, cmd
    name = match[1]
    return name if module_file(name + ".__main__") is None else name + ".__main__"


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_every_module_the_command_imports(name):
    stage = body(name)
    deps = [d for d in stage["deps"] if "${" not in d or d.startswith("configs/")]
    needed = sorted(str(module_file(m).relative_to(REPO))
                    for m in closure(command_module(stage["cmd"])))
    missing = [f for f in needed if not covered(f, deps)]
    assert not missing, f"dvc.yaml stage '{name}' lacks deps on {missing}"
    for dep in deps:  # and every listed module exists
        if dep.startswith("pipeline"):
            assert (REPO / dep).exists(), dep


def test_every_stage_depends_on_the_profile_it_layers():
    for name, stage in STAGES.items():
        stage = body(name)
        if "-c configs/profiles/${repro.profile}.yaml" in stage["cmd"]:
            assert "configs/profiles/${repro.profile}.yaml" in stage["deps"], name
    assert (REPO / "configs" / "profiles" / f"{BASE['repro']['profile']}.yaml").is_file()


def params(name: str) -> list[str]:
    (entry,) = body(name)["params"]
    return entry["configs/base.yaml"]


def keys(section: str, cls: type) -> list[str]:
    return [f"{section}.{k}" for k in result_keys(cls)]


EXPECTED = {
    "data": ["data.source"] + keys("data.demo", DemoConfig),
    "folds": keys("folds", FoldsConfig),
    # the train stage trains the edge refiner too when refine.train is set
    "train": keys("model", ModelConfig) + keys("train", TrainConfig) + keys("refine", RefineConfig),
    "evaluate": keys("predict", PredictConfig),
    "submit": keys("predict", PredictConfig) + keys("submit", SubmitConfig),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_params_are_every_result_setting_by_key_and_no_runtime_one(name):
    assert params(name) == EXPECTED[name]
    assert "train.num_workers" not in params(name) and "predict.batch_size" not in params(name)
    for key in params(name):  # DVC reads each from base.yaml, so each must be written there
        node = BASE
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"configs/base.yaml lacks {key}"
            node = node[part]


def test_data_root_is_the_only_data_setting_left_to_paths():
    assert set(result_keys(DataConfig)) == {"root", "source", "demo"}


def render(template: str, **values: str) -> str:
    paths = DVC["vars"][1]["paths"]
    out = template
    for key, value in {**{f"paths.{k}": v for k, v in paths.items()}, **values}.items():
        out = out.replace("${" + key + "}", str(value))
    assert "${" not in out, out
    return out


def test_run_outputs_are_where_runs_py_puts_them():
    paths = DVC["vars"][1]["paths"]
    roots = Roots(checkpoints=Path(paths["checkpoints"]), metrics=Path(paths["metrics"]),
                  live=Path(paths["live"]), reports=Path(paths["reports"]))
    run = roots.run("unet_small", 3)
    train = body("train")
    outs = [render(next(iter(o)), **{"item.model": "unet_small", "item.fold": 3})
            for o in train["outs"]]
    (metrics,) = [render(next(iter(m)), **{"item.model": "unet_small", "item.fold": 3})
                  for m in train["metrics"]]
    assert outs == [str(run.checkpoint_dir), str(run.live_dir)]
    assert metrics == str(run.record)
    evaluate = body("evaluate")
    model = roots.model("unet_small")
    assert [render(next(iter(m)), item="unet_small") for m in evaluate["metrics"]] == \
        [str(model.cv_summary)]
    assert [render(next(iter(o)), item="unet_small") for o in evaluate["outs"]] == \
        [str(model.report_dir)]


def test_model_files_are_named_after_their_label():
    """dvc.yaml finds a model's outputs by its file name; the code by ``model.name``."""
    for path in sorted((REPO / "configs" / "models").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["model"]["name"] == path.stem, path
