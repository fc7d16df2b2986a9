"""The model comparison table (``python -m pipeline.benchmark table``), built from the real
records: TrainRecord files of pipeline.train and CVSummary files of pipeline.evaluate. Files of
any other shape are rejected with one line naming the file."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.benchmark import table as tbl
from pipeline.config import Config, ModelConfig, default
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.factory import build_model, count_parameters
from pipeline.records import (
    CVSummary,
    GroupScore,
    PredictSettings,
    TrainRecord,
    read_record,
    to_json,
    write_record,
)
from pipeline.runs import Roots

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    tbl.register(app)
    app.command("noop")(lambda: None)  # a second command keeps "table" a subcommand
    return app


def train_record(label: str, fold: int, val_dice: float | None, **changes) -> TrainRecord:
    """A training record as pipeline.train writes it (``changes`` override any field)."""
    record = TrainRecord(
        model=label, fold=fold, best_epoch=3, val_dice=val_dice, val_accuracy=0.99,
        val_precision=0.98, val_recall=0.97, val_images=16, train_loss=0.1, epochs=4,
        images_per_s=10.0, seconds=60.0, height=64, width=96, device="cpu", precision="fp32",
        full_res_val=False, peak_memory_mib=None)
    return dataclasses.replace(record, **changes)


def cv_summary(label: str, fold_dice: dict[int, float], **changes) -> CVSummary:
    """An out-of-fold summary as pipeline.evaluate writes it."""
    dice = list(fold_dice.values())
    summary = CVSummary(
        mode="oof", label=label, data_root="data/carvana", folds_file="folds/folds.csv",
        images=16 * len(dice), dice=statistics.fmean(dice), dice_std=0.02, dice_min=min(dice),
        dice_median=statistics.median(dice), precision=0.99, recall=0.99,
        folds={str(k): GroupScore(dice=d, std=0.01, images=16) for k, d in fold_dice.items()},
        angles={"01": GroupScore(dice=0.99, std=0.0, images=len(dice))},
        makes={"Audi": GroupScore(dice=0.99, std=0.0, images=len(dice))},
        checkpoints={str(k): f"checkpoints/{label}/fold{k}/best.pt" for k in fold_dice},
        images_per_s=2.0,
        predict=PredictSettings(tta=["hflip"], threshold=0.5, largest_component=False,
                                precision="fp32", device="cpu"),
    )
    return dataclasses.replace(summary, **changes)


@pytest.fixture
def metrics_root(tmp_path) -> Path:
    """Three models: two with full-res CV per fold, one with training-time validation only."""
    root = tmp_path / "metrics"
    runs = {
        "unet": {0: 0.9901, 1: 0.9923, 2: 0.9911},
        "fpn": {0: 0.9950, 1: 0.9962, 2: 0.9958},
    }
    for label, dice in runs.items():
        for k in dice:
            write_record(root / label / f"fold{k}.json", train_record(
                label, k, dice[k] - 0.01, images_per_s=10.0 + k, seconds=60.0,
                peak_memory_mib=500.0 + 100 * k))
        write_record(root / label / "cv.json",
                     cv_summary(label, dice, images_per_s=2.0 if label == "unet" else 5.0))
    write_record(root / "nobn" / "fold0.json", train_record("nobn", 0, 0.97, images_per_s=20.0))
    write_record(root / "nobn" / "fold-1.json", train_record("nobn", -1, None))
    (root / "empty").mkdir()
    return root


def test_collect_rows_sorts_by_cv_dice_with_mean_and_std(metrics_root, tmp_path):
    rows = tbl.collect_rows(Roots(metrics=metrics_root, checkpoints=tmp_path / "none"))
    assert [r["label"] for r in rows] == ["fpn", "unet", "nobn"]
    fpn = rows[0]
    assert fpn["dice_per_fold"] == [0.9950, 0.9962, 0.9958]
    assert fpn["dice_mean"] == pytest.approx((0.9950 + 0.9962 + 0.9958) / 3)
    assert fpn["dice_std"] == pytest.approx(statistics.stdev([0.9950, 0.9962, 0.9958]))
    assert fpn["dice_source"] == "full-res TTA" and fpn["folds"] == [0, 1, 2]
    assert fpn["train_images_per_s"] == pytest.approx(11.0)
    assert fpn["infer_images_per_s"] == pytest.approx(5.0)
    assert fpn["peak_memory_mib"] == pytest.approx(700.0)
    assert rows[1]["dice_per_fold"] == [0.9901, 0.9923, 0.9911]  # evaluate's own format
    nobn = rows[2]  # fold-1 (all images) is not part of the CV
    assert nobn["folds"] == [0] and nobn["dice_source"] == "train-res val"
    assert nobn["dice_mean"] == pytest.approx(0.97) and nobn["dice_std"] == 0.0


def test_table_command_writes_markdown_json_and_png(metrics_root, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(_app(), ["table", "--metrics", str(metrics_root), "--checkpoints",
                                    str(tmp_path / "none"), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "benchmark.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split("|")[2].strip() for line in table[1:]] == ["fpn", "unet", "nobn"]
    assert "| 1 | fpn | 0.99567 | 0.00061 | full-res TTA | 0,1,2 |" in md
    assert "python -m pipeline.benchmark" in md  # the command that made it
    data = json.loads((out / "benchmark.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["fpn", "unet", "nobn"]
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert f"wrote {out}/benchmark.md, .json, .png: 3 model(s)" in result.output


def test_table_counts_parameters_from_the_checkpoint(metrics_root, tmp_path):
    cfg = default(Config, model=default(ModelConfig, arch="unet", name="unet", base_width=4, depth=2))
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "ck" / "unet" / "fold0" / "best.pt", model, cfg)
    rows = tbl.collect_rows(Roots(metrics=metrics_root, checkpoints=tmp_path / "ck"),
                            labels=["unet"])
    assert [r["label"] for r in rows] == ["unet"]
    assert rows[0]["params"] == count_parameters(model)


def test_table_errors_are_one_line(tmp_path):
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "metrics folder not found" in result.output
    (tmp_path / "m").mkdir()
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "m")])
    assert result.exit_code == 1 and "no metrics/<label>/fold<K>.json" in result.output
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "m"), "--label", "x"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'm' / 'x'}: no metrics for label 'x'" in result.output


# --------------------------------------------------------------------------- model_row


def test_model_row_prefers_the_record_counts_and_fractional_epochs():
    trained = {0: train_record("m", 0, 0.95, params=1234, train_batches=30, batches_per_epoch=8,
                               epochs=4, peak_memory_mib=300.0),
               1: train_record("m", 1, 0.97, params=1234, seconds=30.0, device="cuda")}
    row = tbl.model_row("m", trained, None)
    assert row["params"] == 1234 and row["peak_memory_mib"] == 300.0
    assert row["epochs"] == pytest.approx((30 / 8 + 4) / 2)  # a time budget ended one early
    assert row["train_seconds"] == pytest.approx(45.0)
    assert row["device"] == "cpu, cuda"
    assert row["dice_source"] == "train-res val" and row["infer_images_per_s"] is None
    # a CV summary that misses a trained fold is not the CV of these runs
    partial = tbl.model_row("m", trained, cv_summary("m", {0: 0.99}))
    assert partial["dice_source"] == "train-res val" and partial["dice_per_fold"] == [0.95, 0.97]
    full = tbl.model_row("m", trained, cv_summary("m", {0: 0.99, 1: 0.98}))
    assert full["dice_source"] == "full-res TTA" and full["dice_per_fold"] == [0.99, 0.98]


def test_rows_without_dice_sort_last_and_print_dashes():
    rows = tbl.sort_rows([
        tbl.model_row("b", {0: train_record("b", 0, None)}, None),
        tbl.model_row("a", {0: train_record("a", 0, 0.9)}, None),
    ])
    assert [r["label"] for r in rows] == ["a", "b"]
    assert rows[1]["dice_source"] == "none" and rows[1]["dice_mean"] is None
    md = tbl.table_markdown(rows)
    assert "| 2 | b | - | - | none | 0 | - |" in md
    assert "Made with" not in md
    assert "```\npython -m x\n```" in tbl.table_markdown(rows, "python -m x")


def test_table_reads_what_the_trainer_writes(tiny_trained, tmp_path):
    roots = tiny_trained.roots
    (row,) = tbl.collect_rows(Roots(metrics=roots.metrics, checkpoints=roots.checkpoints))
    record = read_record(tiny_trained.record, TrainRecord)
    assert row["label"] == "tiny" and row["folds"] == [0]
    assert row["dice_mean"] == pytest.approx(record.val_dice)
    assert row["params"] == record.params and row["params"] > 0
    tbl.write_table([row], tmp_path)
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- other shapes


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("fold0.json", {"model": "m", "fold": 0, "val_dice": 0.9, "epochs": 4},
         "missing key 'best_epoch'"),
        ("cv.json", {"cv_dice": 0.99, "std": 0.001}, "unexpected key 'cv_dice'"),
        ("cv.json", {"mean": 0.99, "per_fold": [0.99, 0.98]}, "unexpected key 'mean'"),
        ("cv.json", "not json at all", "not a readable CV summary"),
    ],
)
def test_files_of_another_shape_are_rejected_naming_the_file(tmp_path, name, content, words):
    path = tmp_path / "metrics" / "m" / name
    path.parent.mkdir(parents=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PipelineError) as err:
        tbl.collect_rows(Roots(metrics=tmp_path / "metrics", checkpoints=tmp_path / "ck"))
    assert str(err.value).startswith(str(path)) and words in str(err.value)
    assert "\n" not in str(err.value)
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "metrics"),
                                    "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {err.value}"]
    assert not (tmp_path / "out").exists()


def test_a_list_of_fold_scores_is_another_shape(tmp_path):
    path = tmp_path / "metrics" / "m" / "cv.json"
    summary = to_json(cv_summary("m", {0: 0.99}))
    summary["folds"] = [{"fold": 0, "dice": 0.99}]  # the old made-up list form
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    with pytest.raises(PipelineError, match=r"cv.json \(a CV summary \(pipeline.evaluate\)\): "
                                            r"folds: expected a mapping"):
        tbl.collect_rows(Roots(metrics=tmp_path / "metrics"))
