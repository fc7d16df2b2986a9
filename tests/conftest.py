"""Shared fixtures: tiny generated data in Kaggle layout, the real files when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("CARVANA_REAL", REPO.parent / "shared" / "carvana"))


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real Kaggle files in ../shared/carvana; tests using it skip when it is absent."""
    if not (REAL_ROOT / "train_masks.csv").is_file():
        pytest.skip(f"real Carvana files not found at {REAL_ROOT}")
    return REAL_ROOT


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small demo dataset in Kaggle layout: 4 train cars + 2 test cars, 16 angles, 64x96."""
    from pipeline.config import DemoConfig
    from pipeline.data.demo import generate_demo

    root = tmp_path_factory.mktemp("tiny_carvana")
    generate_demo(root, DemoConfig(train_cars=4, test_cars=2, seed=0, height=64, width=96))
    return root
