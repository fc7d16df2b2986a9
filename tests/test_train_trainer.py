"""pipeline.train.trainer.train: what one run writes (checkpoints, record, live files), the
images its weights learnt from, resume (refused for other settings, images or starting
weights), fold -1, time budgets, and bad input refused as one line before any output exists."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_config, tiny_overrides, tiny_run

from pipeline.config import load_config
from pipeline.data.cache import build_cache, cache_key, cache_paths
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import checkpoint_config, load_checkpoint, load_model
from pipeline.records import TrainRecord, read_record, to_json
from pipeline.runs import Roots, RunPaths
from pipeline.train import budget, trainer
from pipeline.train.trainer import train

METRIC_KEYS = {"model", "fold", "best_epoch", "val_dice", "val_accuracy", "val_precision",
               "val_recall", "train_loss", "epochs", "images_per_s", "seconds", "height",
               "width", "device"}


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(("seconds", "_per_s"))}
            for r in history]


def history_of(run: RunPaths) -> list[dict]:
    return load_checkpoint(run.last)["train_state"]["progress"]["history"]


def train_interrupted(cfg, folds, run: RunPaths, monkeypatch) -> None:
    """Train until ``last.pt`` of the first epoch is written, then stop as Ctrl-C (or
    kill -9) would."""
    real_log = trainer.log_epoch

    def crash_after_first_epoch(row, epochs):
        real_log(row, epochs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "log_epoch", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, 0, folds_path=folds, run=run, progress=False)
    monkeypatch.setattr(trainer, "log_epoch", real_log)


# --------------------------------------------------------------------------- train()


def test_train_writes_checkpoints_record_and_live_files(tiny_data, tiny_folds, tiny_cache,
                                                        tmp_path):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2)
    run = tiny_run(tmp_path)
    record = train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    metrics = to_json(record)
    assert METRIC_KEYS <= metrics.keys()
    assert record.model == "tiny" and record.fold == 0 and record.epochs == 2
    assert 0 < record.val_dice <= 1 and record.images_per_s > 0
    assert json.loads(run.record.read_text()) == metrics
    assert read_record(run.record, TrainRecord) == record
    best, last = load_checkpoint(run.best), load_checkpoint(run.last)
    assert best["epoch"] == record.best_epoch
    assert best["metrics"]["val_dice"] == pytest.approx(record.val_dice)
    assert "train_state" not in best and last["train_state"]["epoch"] == 1
    assert checkpoint_config(last) == cfg
    model, _ = load_model(run.best)
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
    # DVCLive and the PNG, readable offline; nothing written outside the live dir
    live = run.live_dir
    assert (live / "curves.png").stat().st_size > 1000
    dice_log = pd.read_csv(live / "plots" / "metrics" / "val_dice.tsv", sep="\t")
    assert len(dice_log) == 2
    assert dice_log["val_dice"].iloc[-1] == pytest.approx(last["metrics"]["val_dice"])
    assert not (tmp_path / "dvc.yaml").exists()


def test_paths_follow_the_model_label(tiny_data, tiny_cache):
    cfg = tiny_config(tiny_data, tiny_cache)
    paths = Roots(checkpoints=Path("ck"), metrics=Path("me"), live=Path("dl")).run(
        cfg.model.label, 3)
    assert (paths.checkpoint_dir, paths.record, paths.live_dir) == (
        Path("ck/tiny/fold3"), Path("me/tiny/fold3.json"), Path("dl/tiny/fold3"))


def test_resume_ends_in_the_same_state_as_an_uninterrupted_run(tiny_data, tiny_folds,
                                                               tiny_cache, tmp_path,
                                                               monkeypatch):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, max_steps=3)  # augmentation on
    straight = tiny_run(tmp_path, "straight")
    train(cfg, 0, folds_path=tiny_folds, run=straight, progress=False)

    interrupted = tiny_run(tmp_path, "interrupted")
    train_interrupted(cfg, tiny_folds, interrupted, monkeypatch)
    assert load_checkpoint(interrupted.last)["epoch"] == 0
    resumed = train(cfg, 0, folds_path=tiny_folds, run=interrupted, progress=False,
                    resume=True)

    a = load_checkpoint(straight.last)
    b = load_checkpoint(interrupted.last)
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    history_a = a["train_state"]["progress"]["history"]
    assert timeless(history_a) == timeless(b["train_state"]["progress"]["history"])
    assert a["train_state"]["scheduler"] == b["train_state"]["scheduler"]
    straight_metrics = json.loads(straight.record.read_text())
    assert resumed.val_dice == straight_metrics["val_dice"]
    # the DVCLive log was rebuilt from the checkpoint: two epochs, no duplicate
    log = pd.read_csv(interrupted.live_dir / "plots" / "metrics" / "train_loss.tsv", sep="\t")
    assert log["step"].tolist() == [0, 1]


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(
        tiny_data, tiny_folds, tiny_cache, tmp_path):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1)
    run = tiny_run(tmp_path)
    first = train(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    stamp = run.last.stat().st_mtime_ns
    again = train(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert again.val_dice == first.val_dice and again.epochs == 1
    assert run.last.stat().st_mtime_ns == stamp  # nothing retrained


def test_resume_refuses_a_different_model(tiny_data, tiny_folds, tiny_cache, tmp_path):
    run = tiny_run(tmp_path)
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1), 0, folds_path=tiny_folds,
          run=run, progress=False)
    other = load_config([], tiny_overrides(tiny_data, tiny_cache, epochs=2) + ["model.depth=3"])
    with pytest.raises(PipelineError, match="was trained with other settings"):
        train(other, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)


def swapped_folds(folds_csv: Path, out: Path) -> Path:
    """The same cars with folds 0 and 1 exchanged: fold 0 now holds the cars fold 0's model
    trained on (what a remade folds file can do)."""
    folds = pd.read_csv(folds_csv, dtype={"car_id": str})
    folds["fold"] = 1 - folds["fold"]
    folds.to_csv(out, index=False)
    return out


def test_resume_with_a_remade_folds_file_is_refused(tiny_data, tiny_folds, tiny_cache,
                                                    tmp_path, monkeypatch):
    """Trained on folds A, resumed with folds B whose fold 0 differs: refused in one line, not
    continued on images the weights already learnt from."""
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, max_steps=1)
    run = tiny_run(tmp_path)
    train_interrupted(cfg, tiny_folds, run, monkeypatch)
    other = swapped_folds(tiny_folds, tmp_path / "remade.csv")
    with pytest.raises(PipelineError) as exc:
        train(cfg, 0, folds_path=other, run=run, progress=False, resume=True)
    assert "other settings, training images (the folds file may have changed)" in \
        _one_line(exc)
    train(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)  # the same: on


def test_checkpoints_record_the_images_their_weights_learnt_from(tiny_data, tiny_folds,
                                                                 tiny_cache, tmp_path):
    """Each checkpoint names its training images, those of the weights it started from
    (train.init_from) included; its resume key changes with the images."""
    folds = pd.read_csv(tiny_folds)
    fold0_train = set(folds.query("fold == 1")["img"])
    run = tiny_run(tmp_path)
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1), 0, folds_path=tiny_folds,
          run=run, progress=False)
    for path in (run.best, run.last):
        assert set(load_checkpoint(path)["trained_on"]) == fold0_train
    everything = tiny_run(tmp_path, "all", fold=-1)
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1)
    train(cfg, -1, folds_path=tiny_folds, run=everything, progress=False)
    assert set(load_checkpoint(everything.best)["trained_on"]) == set(folds["img"])
    assert load_checkpoint(everything.best)["key"] != load_checkpoint(run.best)["key"]
    # fold 0's model continued on fold 0 (init_from): the lineage carries over
    chained = tiny_run(tmp_path, "chained")
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1, init_from=str(run.best))
    train(cfg, 0, folds_path=tiny_folds, run=chained, progress=False)
    assert set(load_checkpoint(chained.best)["trained_on"]) == fold0_train


def test_init_from_weights_that_saw_the_held_out_fold_is_refused(tiny_data, tiny_folds,
                                                                 tiny_cache, tmp_path):
    """A profile putting fold 1's model (trained on fold 0's cars) as fold 0's init_from: the
    run would validate, and best.pt be chosen and scored, on images the weights learnt from."""
    fold1 = tiny_run(tmp_path, "fold1", fold=1)
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1), 1, folds_path=tiny_folds,
          run=fold1, progress=False)
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1, init_from=str(fold1.best))
    run = tiny_run(tmp_path, "leaky")
    with pytest.raises(PipelineError) as exc:
        train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    line = _one_line(exc)
    assert line.startswith(f"{fold1.best} (train.init_from): learnt from 32 of the 32 images")
    assert "fold 0 of" in line and not run.last.exists()
    # fold -1 holds nothing out: any weights may start it
    train(cfg, -1, folds_path=tiny_folds, run=tiny_run(tmp_path, "all", fold=-1),
          progress=False)


def test_fold_minus_one_trains_on_everything(tiny_data, tiny_folds, tiny_cache, tmp_path):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, max_steps=2)
    run = tiny_run(tmp_path, fold=-1)
    record = train(cfg, -1, folds_path=tiny_folds, run=run, progress=False)
    assert record.val_dice is None and record.best_epoch == 1  # best = last
    assert load_checkpoint(run.best)["epoch"] == 1
    assert json.loads(run.record.read_text())["fold"] == -1


# --------------------------------------------------------------------------- time budgets


def test_a_budget_shorter_than_an_epoch_trains_part_of_one(tiny_data, tiny_folds, tiny_cache,
                                                          tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(budget, "PROBE_STEPS", 1)
    monkeypatch.setattr(budget, "PROBE_SKIP", 0)
    # 3 batches per epoch (max_steps); a budget of 1 ms
    cfg = tiny_config(tiny_data, tiny_cache, epochs=3, time_budget_min=1e-3 / 60)
    run = tiny_run(tmp_path)
    record = train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    out = capsys.readouterr().out
    assert "planning 0.333 of 3 epochs (1 batches)" in out, out
    assert record.epochs == 1
    history = history_of(run)
    assert [r["train_batches"] for r in history] == [1]
    assert history[0]["lr"] == pytest.approx(cfg.train.min_lr)  # the decay ended in budget


def test_a_budget_of_some_epochs_ends_the_decay_inside_it(tiny_data, tiny_folds, tiny_cache,
                                                         tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "PROBE_STEPS", 1)
    monkeypatch.setattr(budget, "PROBE_SKIP", 0)
    # whatever the pace, 5 of 6 batches fit: the plan is 1.67 epochs, the second one partial
    monkeypatch.setattr(budget, "plan_batches", lambda *a, **k: min(5, a[2]))
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, time_budget_min=1)  # 60 s
    run = tiny_run(tmp_path)
    train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    history = history_of(run)
    assert [r["train_batches"] for r in history] == [3, 2]
    assert history[0]["lr"] > 10 * cfg.train.min_lr
    assert history[-1]["lr"] == pytest.approx(cfg.train.min_lr)


# --------------------------------------------------------------------------- bad input


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_missing_folds_file(tiny_data, tiny_cache, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(tiny_data, tiny_cache), 0, folds_path=tmp_path / "nope.csv",
              run=tiny_run(tmp_path), progress=False)
    assert "nope.csv" in _one_line(exc)
    assert not (tmp_path / "run").exists()


def test_fold_out_of_range(tiny_data, tiny_folds, tiny_cache, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(tiny_data, tiny_cache), 2, folds_path=tiny_folds,
              run=tiny_run(tmp_path, fold=2), progress=False)
    assert "fold 2 does not exist" in _one_line(exc)


def test_missing_data_root(tiny_folds, tiny_cache, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(tmp_path / "nowhere", tiny_cache), 0, folds_path=tiny_folds,
              run=tiny_run(tmp_path), progress=False)
    assert str(tmp_path / "nowhere") in _one_line(exc)


def test_folds_sharing_a_car_are_refused(tiny_data, tiny_folds, tiny_cache, tmp_path):
    folds = pd.read_csv(tiny_folds, dtype={"car_id": str})
    car = folds["car_id"].iloc[0]
    first = folds.index[folds["car_id"] == car][0]
    folds.loc[first, "fold"] = 1 - folds.loc[first, "fold"]  # one angle leaks to the other side
    broken = tmp_path / "leaky.csv"
    folds.to_csv(broken, index=False)
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(tiny_data, tiny_cache), 0, folds_path=broken, run=tiny_run(tmp_path),
              progress=False)
    assert car in _one_line(exc) and "leaky.csv" in str(exc.value)


def test_unreadable_image_keeps_earlier_outputs(tiny_data, tiny_folds, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    victim = sorted((root / "train").glob("*.jpg"))[5]
    victim.write_bytes(b"\xff\xd8 truncated")
    run = tiny_run(tmp_path)
    run.checkpoint_dir.mkdir(parents=True)
    run.last.write_bytes(b"an earlier run")
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(root, tmp_path / "cache"), 0, folds_path=tiny_folds, run=run,
              progress=False)
    assert victim.name in _one_line(exc)
    assert run.last.read_bytes() == b"an earlier run"
    assert not run.record.exists()


def test_error_inside_a_dataloader_worker_is_one_line(tiny_data, tiny_folds, tmp_path):
    """A cached PNG damaged after the cache check (as a disk error would, its time kept) is
    rebuilt by the worker that reads it: the cache is a copy of the sources, so a damaged
    copy costs one decode, not the run (this test used to expect a one-line error naming the
    cached file). When its source is damaged too, the worker's error is one line naming it."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    cache = tmp_path / "cache"
    rows = train_index(root)
    build_cache(rows, 64, 96, cache, progress=False)
    img = pd.read_csv(tiny_folds).query("fold == 1")["img"].iloc[0]  # a training image
    rec = rows.set_index("img").loc[img]
    cached, _ = cache_paths(img, 64, 96, cache, cache_key(rec["image_path"], rec["mask_path"]))

    def damage(path: Path) -> None:
        stamp = path.stat()
        path.write_bytes(path.read_bytes()[:100])
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    damage(cached)
    cfg = tiny_config(root, cache, num_workers=1, max_steps=0, augment=False, epochs=1)
    train(cfg, 0, folds_path=tiny_folds, run=tiny_run(tmp_path, "rebuilt"), progress=False)
    assert cached.stat().st_size > 100  # rebuilt, and whole again

    damage(cached)
    damage(Path(rec["image_path"]))
    with pytest.raises(PipelineError) as exc:
        train(cfg, 0, folds_path=tiny_folds, run=tiny_run(tmp_path), progress=False)
    assert rec["image_path"] in _one_line(exc) and "Traceback" not in str(exc.value)


def test_a_resumed_budget_run_keeps_its_plan_and_learning_rate(tiny_data, tiny_folds,
                                                               tiny_cache, tmp_path,
                                                               monkeypatch, capsys):
    """Review defect 3: the plan in force before a crash (5 of 6 batches) is restored from
    last.pt, so the resumed run trains the same batches at the same learning rates."""
    monkeypatch.setattr(budget, "PROBE_STEPS", 1)
    monkeypatch.setattr(budget, "PROBE_SKIP", 0)
    monkeypatch.setattr(budget, "plan_batches", lambda *a, **k: min(5, a[2]))
    cfg = tiny_config(tiny_data, tiny_cache, epochs=3, time_budget_min=1, augment=False)
    straight = tiny_run(tmp_path, "straight")
    train(cfg, 0, folds_path=tiny_folds, run=straight, progress=False)
    out = capsys.readouterr().out
    assert "epoch 1/2 " in out and "/3 " not in out  # defect 13: the planned epochs

    interrupted = tiny_run(tmp_path, "interrupted")
    train_interrupted(cfg, tiny_folds, interrupted, monkeypatch)
    # after the resume the pace would allow every batch: the plan must not grow back
    monkeypatch.setattr(budget, "plan_batches", lambda *a, **k: a[2])
    train(cfg, 0, folds_path=tiny_folds, run=interrupted, progress=False, resume=True)
    a, b = history_of(straight), history_of(interrupted)
    assert [r["train_batches"] for r in a] == [r["train_batches"] for r in b] == [3, 2]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert b[-1]["lr"] == pytest.approx(cfg.train.min_lr)


class NaNAfter(torch.nn.Module):
    """A loss that turns NaN from its ``n``-th training call on (validation runs without
    gradients and is not counted)."""

    def __init__(self, inner, n: int):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, logits, target):
        loss = self.inner(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= self.n:
                return loss * float("nan")
        return loss


def test_a_nan_loss_stops_with_one_line_naming_the_last_good_checkpoint(
        tiny_data, tiny_folds, tiny_cache, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=3, max_steps=2)
    real = trainer.build_loss
    monkeypatch.setattr(trainer, "build_loss", lambda tc: NaNAfter(real(tc), 4))  # epoch 2
    run = tiny_run(tmp_path)
    with pytest.raises(PipelineError) as exc:
        train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    line = _one_line(exc)
    assert "epoch 2/3" in line and "loss is nan at batch 2" in line, line
    assert f"last good checkpoint is {run.last} (epoch 1)" in line, line
    last = load_checkpoint(run.last)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values()
               if v.dtype.is_floating_point)


def test_ema_weights_are_validated_and_kept_in_best(tiny_data, tiny_folds, tiny_cache,
                                                    tmp_path):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, max_steps=3, ema=0.9)
    run = tiny_run(tmp_path)
    train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    best, last = load_checkpoint(run.best), load_checkpoint(run.last)
    averaged = last["train_state"]["ema"]["weights"]
    assert last["train_state"]["ema"]["steps"] == 6
    raw = last["state_dict"]
    floats = [k for k, v in raw.items() if v.dtype.is_floating_point]
    assert any(not torch.equal(raw[k], averaged[k]) for k in floats)  # the average is not raw
    if best["epoch"] == last["epoch"]:
        for k in raw:
            assert torch.equal(best["state_dict"][k], averaged[k]), k
    # the record's val Dice is the average's: re-scoring best.pt gives it back
    assert best["metrics"]["val_dice"] == max(r["val_dice"] for r in history_of(run))


def test_ema_resume_equals_an_uninterrupted_run(tiny_data, tiny_folds, tiny_cache, tmp_path,
                                                monkeypatch):
    cfg = tiny_config(tiny_data, tiny_cache, epochs=2, max_steps=2, ema=0.9)
    straight = tiny_run(tmp_path, "straight")
    train(cfg, 0, folds_path=tiny_folds, run=straight, progress=False)
    interrupted = tiny_run(tmp_path, "interrupted")
    train_interrupted(cfg, tiny_folds, interrupted, monkeypatch)
    train(cfg, 0, folds_path=tiny_folds, run=interrupted, progress=False, resume=True)
    a, b = load_checkpoint(straight.last), load_checkpoint(interrupted.last)
    for k, v in a["train_state"]["ema"]["weights"].items():
        assert torch.equal(v, b["train_state"]["ema"]["weights"][k]), k


def test_init_from_starts_from_the_weights_at_a_larger_size(tiny_data, tiny_folds, tiny_cache,
                                                            tmp_path):
    small = tiny_run(tmp_path, "small")
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=2), 0, folds_path=tiny_folds,
          run=small, progress=False)
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1, height=96, width=128,
                      init_from=str(small.best))
    parts = trainer.build_parts(cfg, trainer.DistInfo(), steps_per_epoch=1)
    start = load_checkpoint(small.best)["state_dict"]
    for k, v in parts.model.state_dict().items():
        assert torch.equal(v, start[k]), k
    large = tiny_run(tmp_path, "large")
    record = train(cfg, 0, folds_path=tiny_folds, run=large, progress=False)
    assert (record.height, record.width) == (96, 128)
    stored = checkpoint_config(load_checkpoint(large.best))
    assert stored.train.init_from == str(small.best) and stored.train.height == 96
    model, _ = load_model(large.best)
    assert model(torch.zeros(1, 3, 96, 128)).shape == (1, 1, 96, 128)


def test_init_from_another_model_is_one_line(tiny_data, tiny_folds, tiny_cache, tmp_path):
    small = tiny_run(tmp_path, "small")
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1), 0, folds_path=tiny_folds,
          run=small, progress=False)
    other = load_config([], tiny_overrides(tiny_data, tiny_cache, epochs=1,
                                           init_from=str(small.best)) + ["model.depth=3"])
    with pytest.raises(PipelineError, match="init_from holds another model"):
        train(other, 0, folds_path=tiny_folds, run=tiny_run(tmp_path, "b"), progress=False)


def test_crop_trains_on_windows_and_validates_the_whole_image(tiny_data, tiny_folds, tiny_cache,
                                                            tmp_path, monkeypatch):
    seen = {"train": set(), "val": set()}
    real_loss = trainer.build_loss

    def recording_loss(tc):
        loss = real_loss(tc)

        def record(logits, target):
            seen["train" if torch.is_grad_enabled() else "val"].add(tuple(target.shape[-2:]))
            return loss(logits, target)

        return record

    monkeypatch.setattr(trainer, "build_loss", recording_loss)
    cfg = tiny_config(tiny_data, tiny_cache, epochs=1, crop="[32,64]")
    run = tiny_run(tmp_path)
    train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    assert seen == {"train": {(32, 64)}, "val": {(64, 96)}}
    stored = checkpoint_config(load_checkpoint(run.best))
    assert stored.train.crop == [32, 64] and (stored.train.height, stored.train.width) == (64, 96)


def test_crop_larger_than_the_image_is_one_line(tiny_data, tiny_folds, tiny_cache, tmp_path):
    cfg = tiny_config(tiny_data, tiny_cache, crop="[65,64]")
    run = tiny_run(tmp_path)
    with pytest.raises(PipelineError, match="train.crop"):
        train(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    assert not run.last.exists()


# --------------------------------------------------------------------------- GPU-path options


def test_compile_is_in_place_after_the_weight_average_is_copied(tiny_data, tiny_cache,
                                                                fast_compile):
    cfg = tiny_config(tiny_data, tiny_cache, compile=True, ema=0.9)
    parts = trainer.build_parts(cfg, trainer.DistInfo(), steps_per_epoch=1)
    assert parts.model._compiled_call_impl is not None
    assert parts.ema.module._compiled_call_impl is None  # the average stays eager
    assert not any(k.startswith("_orig_mod.") for k in parts.model.state_dict())


def test_a_compiled_step_trains_and_saves_weights_a_plain_model_loads(
        tiny_data, tiny_folds, tiny_cache, tmp_path, fast_compile, monkeypatch):
    tuned = []
    monkeypatch.setattr(trainer, "enable_fast_kernels", tuned.append)
    runs = {}
    for compile_ in (False, True):
        runs[compile_] = tiny_run(tmp_path, f"compile_{compile_}")
        cfg = tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=1, compile=compile_)
        train(cfg, 0, folds_path=tiny_folds, run=runs[compile_], progress=False)
    assert tuned == [torch.device("cpu")] * 2  # cuDNN autotuning asked for (a no-op here)
    eager, compiled = load_checkpoint(runs[False].last), load_checkpoint(runs[True].last)
    assert checkpoint_config(compiled).train.compile is True
    assert list(compiled["state_dict"]) == list(eager["state_dict"])  # no _orig_mod. prefix
    # the same first batch through the captured forward and backward graphs: the same loss
    # and the same step (aot_eager runs the same kernels; measured identical)
    assert history_of(runs[True])[0]["train_loss"] == pytest.approx(
        history_of(runs[False])[0]["train_loss"], rel=1e-5)
    for k, v in eager["state_dict"].items():
        torch.testing.assert_close(compiled["state_dict"][k], v)
    model, _ = load_model(runs[True].best)  # a fresh, uncompiled model
    assert model._compiled_call_impl is None
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_a_small_dev_shm_fails_before_any_output(tiny_data, tiny_folds, tiny_cache, tmp_path,
                                                 monkeypatch):
    sizes = []

    def full_shm(path):
        sizes.append(path)
        return os.statvfs_result((4096, 4096, 16384, 0, 0, 0, 0, 0, 0, 255))  # 64 MiB, all used

    monkeypatch.setattr(trainer.shm.os, "statvfs", full_shm)
    with pytest.raises(PipelineError) as exc:
        train(tiny_config(tiny_data, tiny_cache, num_workers=2), 0, folds_path=tiny_folds,
              run=tiny_run(tmp_path), progress=False)
    assert sizes == ["/dev/shm"]
    assert _one_line(exc).startswith("/dev/shm has 0 MiB free but the DataLoader workers need")
    assert not (tmp_path / "run").exists()
