"""Model comparison: grid expansion, the table built from metrics files, the run orchestration."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.benchmark import compare as cmp
from pipeline.config import Config
from pipeline.errors import PipelineError

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    cmp.register(app)
    return app


# --------------------------------------------------------------------------- grid


def test_expand_grid_is_the_cartesian_product_in_order():
    combos = cmp.expand_grid(["train.lr=1e-3,3e-4", "train.batch_size=4,8"])
    assert combos == [
        ["train.lr=1e-3", "train.batch_size=4"],
        ["train.lr=1e-3", "train.batch_size=8"],
        ["train.lr=3e-4", "train.batch_size=4"],
        ["train.lr=3e-4", "train.batch_size=8"],
    ]
    assert cmp.expand_grid([]) == [[]]
    assert len(cmp.expand_grid(["a.b=1,2,3", "c.d=x", "e.f=1,2"])) == 6


def test_expand_grid_keeps_lists_whole():
    assert cmp.expand_grid(["predict.tta=[hflip],[hflip,vflip]"]) == [
        ["predict.tta=[hflip]"], ["predict.tta=[hflip,vflip]"],
    ]
    assert cmp.split_values("'a,b',c") == ["'a,b'", "c"]


@pytest.mark.parametrize("spec", ["train.lr", "=1,2", "train.lr=", "train.lr=1,,2"])
def test_expand_grid_rejects_malformed_specs(spec):
    with pytest.raises(PipelineError, match="--grid"):
        cmp.expand_grid([spec])


def test_expand_grid_rejects_a_repeated_key():
    with pytest.raises(PipelineError, match="given twice"):
        cmp.expand_grid(["train.lr=1", "train.lr=2"])


def test_run_label_is_file_name_safe():
    assert cmp.run_label("unet", []) == "unet"
    assert cmp.run_label("unet-small", ["train.lr=1e-3", "train.batch_size=4"]) == (
        "unet-small+lr=1e-3+batch_size=4"
    )
    assert "/" not in cmp.run_label("m", ["predict.tta=[hflip, vflip]"])


def test_build_runs_applies_each_combination_and_labels_it(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("model:\n  arch: unet\n  name: small\n  base_width: 8\n")
    nobn = tmp_path / "nobn.yaml"
    nobn.write_text("model:\n  arch: unet\n  name: nobn\n  batch_norm: false\n")
    runs = cmp.build_runs([], [str(small), str(nobn)], ["train.epochs=1"],
                          ["train.lr=0.01,0.001"])
    assert [r.label for r in runs] == ["small+lr=0.01", "small+lr=0.001", "nobn+lr=0.01",
                                       "nobn+lr=0.001"]
    assert [r.cfg.train.lr for r in runs] == [0.01, 0.001, 0.01, 0.001]
    assert all(r.cfg.train.epochs == 1 for r in runs)
    assert runs[0].cfg.model.name == "small+lr=0.01"  # metrics land in metrics/<label>/
    assert runs[2].cfg.model.batch_norm is False and runs[0].cfg.model.base_width == 8
    with pytest.raises(PipelineError, match="share the label"):
        cmp.build_runs([], [str(small), str(small)])
    with pytest.raises(PipelineError, match="unknown config key"):
        cmp.build_runs([], [str(small)], grid=["train.lrr=1,2"])


# --------------------------------------------------------------------------- table from files


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def fake_metrics(tmp_path) -> Path:
    """Three models: two with full-res CV per fold, one with training-time validation only."""
    root = tmp_path / "metrics"
    runs = {
        "unet": {0: 0.9901, 1: 0.9923, 2: 0.9911},
        "fpn": {0: 0.9950, 1: 0.9962, 2: 0.9958},
    }
    for label, dice in runs.items():
        for k in dice:
            _write(root / label / f"fold{k}.json", {
                "model": label, "fold": k, "val_dice": dice[k] - 0.01, "epochs": 4,
                "images_per_s": 10.0 + k, "seconds": 60.0, "device": "cpu",
                "peak_memory_mib": 500.0 + 100 * k,
            })
        if label == "unet":  # the summary pipeline.evaluate writes
            per_fold = {str(k): {"dice": d, "std": 0.01, "images": 16} for k, d in dice.items()}
        else:  # a list of {fold, dice} is read too
            per_fold = [{"fold": k, "dice": d} for k, d in dice.items()]
        _write(root / label / "cv.json", {
            "dice": statistics.fmean(dice.values()), "dice_std": 0.02, "folds": per_fold,
            "images_per_s": 2.0 if label == "unet" else 5.0,
        })
    _write(root / "nobn" / "fold0.json", {"model": "nobn", "fold": 0, "val_dice": 0.97,
                                         "images_per_s": 20.0, "device": "cpu", "epochs": 4})
    _write(root / "nobn" / "fold-1.json", {"model": "nobn", "fold": -1, "val_dice": None})
    (root / "empty").mkdir()
    return root


def test_collect_rows_sorts_by_cv_dice_with_mean_and_std(fake_metrics):
    rows = cmp.collect_rows(fake_metrics, checkpoints_dir=None)
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


def test_table_command_writes_markdown_json_and_png(fake_metrics, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(_app(), ["table", "--metrics", str(fake_metrics), "--checkpoints",
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


def test_table_counts_parameters_from_the_checkpoint(fake_metrics, tmp_path):
    from pipeline.config import ModelConfig
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.models.factory import build_model, count_parameters

    cfg = Config(model=ModelConfig(arch="unet", name="unet", base_width=4, depth=2))
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "ck" / "unet" / "fold0" / "best.pt", model, cfg)
    rows = cmp.collect_rows(fake_metrics, tmp_path / "ck", labels=["unet"])
    assert [r["label"] for r in rows] == ["unet"]
    assert rows[0]["params"] == count_parameters(model)


def test_table_errors_are_one_line(tmp_path):
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "metrics folder not found" in result.output
    (tmp_path / "m").mkdir()
    result = runner.invoke(_app(), ["table", "--metrics", str(tmp_path / "m")])
    assert result.exit_code == 1 and "no metrics/<label>/fold<K>.json" in result.output


# --------------------------------------------------------------------------- the run


class _FakeTrain:
    """Records the calls and writes what pipeline.train writes (metrics JSON, best.pt); the
    validation Dice depends on the learning rate so the runs differ."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, fold, *, folds_path, out_dir, metrics_path, live_dir, progress,
                 time_budget_s=None):
        from pipeline.models.checkpoint import save_checkpoint
        from pipeline.models.factory import build_model

        self.calls.append((cfg.model.label, fold, time_budget_s, Path(metrics_path)))
        save_checkpoint(Path(out_dir) / "best.pt", build_model(cfg.model), cfg)
        metrics = {"model": cfg.model.label, "fold": fold, "val_dice": 0.9 + cfg.train.lr,
                   "images_per_s": 12.0, "epochs": 2, "seconds": 1.0, "device": "cpu"}
        _write(Path(metrics_path), metrics)
        return metrics


def _fake_evaluate(cfg, checkpoints, *, folds_path, report_dir, progress):
    """A cv.json summary as pipeline.evaluate writes it: per-fold Dice under "folds"."""
    folds = {}
    for ckpt in checkpoints:
        assert ckpt.name == "best.pt" and ckpt.is_file()
        k = int(ckpt.parent.name[len("fold"):])
        folds[str(k)] = {"dice": 0.95 + cfg.train.lr + k * 1e-4, "std": 0.01, "images": 16}
    return {"mode": "oof", "label": cfg.model.label, "dice": 0.0, "folds": folds,
            "images_per_s": 3.0}


def test_compare_trains_every_run_on_every_fold_with_the_same_budget(tmp_path):
    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  arch: unet\n  name: tiny\n  base_width: 4\n  depth: 2\n")
    runs = cmp.build_runs([], [str(yaml)], grid=["train.lr=0.01,0.02"])
    fake = _FakeTrain()
    kwargs = {
        "time_budget_min": 0.5, "metrics_dir": tmp_path / "metrics",
        "checkpoints_dir": tmp_path / "ck", "live_dir": tmp_path / "live",
        "out_dir": tmp_path / "rep", "command": "python -m pipeline.benchmark run",
        "train_fn": fake, "evaluate_fn": _fake_evaluate, "progress": False,
    }
    rows = cmp.compare(runs, [0, 1], **kwargs)
    assert [(c[0], c[1], c[2]) for c in fake.calls] == [
        ("tiny+lr=0.01", 0, 30.0), ("tiny+lr=0.01", 1, 30.0),
        ("tiny+lr=0.02", 0, 30.0), ("tiny+lr=0.02", 1, 30.0),
    ]
    assert fake.calls[0][3] == tmp_path / "metrics" / "tiny+lr=0.01" / "fold0.json"
    assert [r["label"] for r in rows] == ["tiny+lr=0.02", "tiny+lr=0.01"]  # best first
    best = rows[0]
    assert best["dice_per_fold"] == pytest.approx([0.97, 0.9701])
    assert best["dice_source"] == "full-res TTA"
    assert best["infer_images_per_s"] == 3.0 and best["train_images_per_s"] == 12.0
    assert best["settings"] == ["train.lr=0.02"]
    from pipeline.models.factory import build_model, count_parameters

    assert best["params"] == count_parameters(build_model(runs[0].cfg.model))
    assert best["peak_memory_mib"] is None or best["peak_memory_mib"] > 0
    md = (tmp_path / "rep" / "benchmark.md").read_text()
    assert "`tiny+lr=0.02`: train.lr=0.02" in md
    assert (tmp_path / "rep" / "benchmark.png").is_file()
    # The evaluation summary became metrics/<label>/cv.json: `table` rebuilds the same rows.
    cv = json.loads((tmp_path / "metrics" / "tiny+lr=0.02" / "cv.json").read_text())
    assert cv["folds"]["1"]["dice"] == pytest.approx(0.9701)
    again = cmp.collect_rows(tmp_path / "metrics", tmp_path / "ck")
    assert [(r["label"], r["dice_mean"]) for r in again] == [
        (r["label"], r["dice_mean"]) for r in rows]

    # Resuming: folds already trained with the same settings are not trained again...
    fake.calls.clear()
    cmp.compare(runs, [0, 1], **kwargs)
    assert fake.calls == []
    # ...but a changed setting retrains.
    changed = cmp.build_runs([], [str(yaml)], ["train.epochs=3"], grid=["train.lr=0.01"])
    cmp.compare(changed, [0], **kwargs)
    assert [(c[0], c[1]) for c in fake.calls] == [("tiny+lr=0.01", 0)]


def test_time_budget_needs_the_training_hook(tmp_path):
    def no_budget(cfg, fold, *, folds_path, out_dir, metrics_path, live_dir, progress):
        raise AssertionError("must not train")

    runs = [cmp.Run("m", Config(), "m.yaml")]
    with pytest.raises(PipelineError, match="time_budget_s"):
        cmp.compare(runs, [0], time_budget_min=1.0, train_fn=no_budget,
                    evaluate_fn=_fake_evaluate, out_dir=tmp_path)
    with pytest.raises(PipelineError, match="fold -1 has no validation"):
        cmp.compare(runs, [-1], train_fn=no_budget, evaluate_fn=_fake_evaluate, out_dir=tmp_path)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_run_end_to_end_on_tiny_data(tiny_data, tmp_path):
    """The real training and evaluation cores, two tiny models, one fold, one epoch."""
    from pipeline.config import FoldsConfig
    from pipeline.data.layout import train_index
    from pipeline.folds import make_folds, write_folds

    folds = write_folds(make_folds(train_index(tiny_data), FoldsConfig(n_folds=2, seed=0)),
                        tmp_path / "folds.csv")
    models = []
    for name, extra in [("tiny", ""), ("tiny-noskip", "  skip: false\n")]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model:\n  arch: unet\n  name: {name}\n  base_width: 4\n  depth: 2\n"
                        + extra)
        models += ["--model", str(path)]
    out = tmp_path / "reports"
    args = [
        "run", *models, "--fold", "0", "--folds", str(folds), "--metrics", str(tmp_path / "m"),
        "--checkpoints", str(tmp_path / "ck"), "--live", str(tmp_path / "live"),
        "--out-dir", str(out), "--no-progress",
        f"data.root={tiny_data}", f"data.cache_dir={tmp_path / 'cache'}", "train.height=32",
        "train.width=48", "train.epochs=1", "train.batch_size=8", "train.num_workers=0",
        "train.live=false", "predict.num_workers=0", "predict.batch_size=8",
    ]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "benchmark.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert set(rows) == {"tiny", "tiny-noskip"}
    for r in rows.values():
        assert r["dice_source"] == "full-res TTA" and r["folds"] == [0]
        assert 0.0 <= r["dice_mean"] <= 1.0
        assert r["params"] > 0 and r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0
    assert rows["tiny"]["params"] > rows["tiny-noskip"]["params"]  # skips widen the decoder
    cv = json.loads((tmp_path / "m" / "tiny" / "cv.json").read_text())
    assert cv["images"] == 32 and cv["folds"]["0"]["images"] == 32  # 2 of 4 cars, 16 angles
    assert "| 1 | " in (out / "benchmark.md").read_text()
