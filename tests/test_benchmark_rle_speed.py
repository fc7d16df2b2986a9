"""``python -m pipeline.benchmark rle``: our RLE against the common Kaggle kernel and our
largest-region clean-up against OpenCV on the same masks: agreement is checked before anything
is timed, and the speed ratios are reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from pipeline.benchmark.rle_speed import (
    largest_component_reference,
    load_masks,
    register,
    run_rle_benchmark,
    with_specks,
)
from pipeline.errors import PipelineError


def test_benchmark_core_checks_agreement_and_reports_ratios():
    rng = np.random.default_rng(2)
    masks = [(rng.random((32, 48)) < 0.3).astype(np.uint8) for _ in range(4)]
    result = run_rle_benchmark(masks, repeats=1)
    assert result["masks"] == 4 and result["shape"] == [32, 48]
    assert result["encode_speedup"] > 0 and result["decode_speedup"] > 0
    assert result["largest_component_ms"]["masks"] == 4 and result["largest_component_speedup"] > 0
    assert result["cleanup_rle_ms"]["masks"] == 4 and result["cleanup_rle_speedup"] == \
        pytest.approx(result["cleanup_rle_ms"]["rebuilt"] / result["cleanup_rle_ms"]["from_runs"])


def test_opencv_baseline_breaks_ties_in_row_major_order():
    masks = torch.zeros(3, 2, 8, dtype=torch.bool)
    masks[0, 0, 5] = masks[0, 1, 0] = True  # OpenCV labels (1, 0) first; (0, 5) comes first
    masks[1, :, 2:4] = True
    got = largest_component_reference(masks)
    assert got[0].sum() == 1 and got[0, 0, 5]
    assert torch.equal(got[1], masks[1]) and not got[2].any()


def test_specks_are_added_to_a_bool_batch():
    masks = [np.zeros((100, 200), np.uint8) for _ in range(3)]
    batch = with_specks(masks, 2)
    assert batch.shape == (2, 100, 200) and batch.dtype == torch.bool and batch.any()


def test_rle_command_on_tiny_masks(tiny_data, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "rle" a subcommand
    out = tmp_path / "rle.json"
    result = CliRunner().invoke(app, ["rle", "--data-root", str(tiny_data), "--limit", "3",
                                      "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["masks"] == 3 and data["shape"] == [64, 96]
    assert data["data_root"] == str(tiny_data)
    assert "RLE on 3 masks of 64x96 (best of 1)" in result.output
    assert data["largest_component_ms"]["masks"] == 3
    assert "largest component (3 masks in one batch" in result.output
    assert "clean-up + RLE (3 masks)" in result.output


def test_no_masks_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="no \\*_mask.gif files to benchmark on"):
        load_masks(tmp_path, 4)
