"""Shared fixtures: tiny generated data in Kaggle layout, its folds, the tiny config every test
shrinks to, one tiny trained checkpoint, and the real files when present."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.config import Config, DemoConfig, FoldsConfig, default, load_config
from pipeline.data.demo import generate_demo
from pipeline.data.layout import train_index
from pipeline.folds.splits import make_folds, write_folds
from pipeline.runs import Roots, RunPaths

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("CARVANA_REAL", REPO.parent / "shared" / "carvana"))


def tiny_overrides(root: Path, cache: Path, **train: object) -> list[str]:
    """A config small enough for a 2-core CPU: 64x96 images, a U-Net of width 8 and depth 2,
    fp32 (the same numbers on every CPU), 3 batches per epoch, no DataLoader workers."""
    values = {"height": 64, "width": 96, "epochs": 2, "batch_size": 4, "num_workers": 0,
              "lr": 0.003, "max_steps": 3, "threads": 1, "warmup_epochs": 0.5,
              "precision": "fp32", **train}
    model = ["model.arch=unet", "model.name=tiny", "model.base_width=8", "model.depth=2"]
    predict = ["predict.num_workers=0", "predict.batch_size=4", "predict.precision=fp32"]
    return ([f"data.root={root}", f"data.cache_dir={cache}"] + model + predict
            + [f"train.{k}={v}" for k, v in values.items()])


def tiny_config(root: Path, cache: Path, **train: object) -> Config:
    """:func:`tiny_overrides` as a Config (``train`` overrides any train.* value)."""
    return load_config([], tiny_overrides(root, cache, **train))


def tiny_run(tmp_path: Path, name: str = "run", fold: int = 0, label: str = "tiny") -> RunPaths:
    """Every output of one tiny run under ``tmp_path/name``."""
    base = tmp_path / name
    roots = Roots(checkpoints=base / "ckpt", metrics=base / "metrics", live=base / "live",
                  reports=base / "reports")
    return roots.run(label, fold)


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real Kaggle files in ../shared/carvana; tests using it skip when it is absent."""
    if not (REAL_ROOT / "train_masks.csv").is_file():
        pytest.skip(f"real Carvana files not found at {REAL_ROOT}")
    return REAL_ROOT


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small demo dataset in Kaggle layout: 4 train cars + 2 test cars, 16 angles, 64x96."""
    root = tmp_path_factory.mktemp("tiny_carvana")
    generate_demo(root, default(DemoConfig, train_cars=4, test_cars=2, seed=0, height=64, width=96))
    return root


@pytest.fixture(scope="session")
def tiny_folds(tiny_data, tmp_path_factory) -> Path:
    """2 folds of the tiny data (2 cars each), unstratified."""
    folds = make_folds(train_index(tiny_data), default(FoldsConfig, n_folds=2, seed=0, stratify="none"))
    return write_folds(folds, tmp_path_factory.mktemp("folds") / "folds.csv")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, tiny_folds, tiny_cache, tmp_path_factory) -> RunPaths:
    """One tiny U-Net trained on fold 0 of the tiny data (2 epochs of 3 batches), read-only:
    ``.best``, ``.last``, ``.record``, ``.live_dir``."""
    from pipeline.train.trainer import train

    run = tiny_run(tmp_path_factory.mktemp("trained"))
    train(tiny_config(tiny_data, tiny_cache), 0, folds_path=tiny_folds, run=run, progress=False)
    return run


# Every way a library here fetches weights; each name is patched wherever a module imported it.
DOWNLOADERS = ("hf_hub_download", "snapshot_download", "load_state_dict_from_url",
               "download_url_to_file", "urlopen")
DOWNLOADING_MODULES = ("segmentation_models_pytorch", "timm", "huggingface_hub", "torch.hub",
                       "torchvision", "urllib.request")


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to download: SMP's ``hf_hub_download`` (smp 0.6), torch
    hub, urllib and any socket connection raise and are recorded. Yields the list of attempts
    (a test that provokes one on purpose checks it, then clears it)."""
    import segmentation_models_pytorch  # noqa: F401 -- load the modules whose names are patched
    import torch.hub  # noqa: F401

    attempts: list[str] = []

    def refuse(name: str):
        def _refuse(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"test: {name} tried to reach the network")
        return _refuse

    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(DOWNLOADING_MODULES):
            continue
        for attr in DOWNLOADERS:
            if callable(getattr(module, attr, None)):
                monkeypatch.setattr(module, attr, refuse(f"{module_name}.{attr}"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    yield attempts
    assert not attempts, f"a download was attempted: {attempts}"


@pytest.fixture
def fast_compile(monkeypatch):
    """``torch.compile`` through the "aot_eager" backend: the same graph capture (forward and
    backward) as inductor, without generating and building C++ kernels (about 20 s each on a
    2-core CPU). Compiled code is dropped afterwards."""
    import torch

    from pipeline import device

    monkeypatch.setattr(device, "COMPILE_BACKEND", "aot_eager")
    yield
    torch._dynamo.reset()
