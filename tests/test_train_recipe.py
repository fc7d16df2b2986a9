"""pipeline.train.recipe: a phase's settings (pure, checked before anything trains), a
progressive run equal to the manual sequence of runs with train.init_from, resume per phase,
and the edge refiner trained inside the run and kept on resume."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from conftest import tiny_config, tiny_run

from pipeline.config import Config, default, load_config
from pipeline.errors import PipelineError
from pipeline.folds.splits import load_folds, write_folds
from pipeline.models.checkpoint import checkpoint_config, load_checkpoint
from pipeline.refine.fit import refiner_key
from pipeline.refine.store import load_refiner, refiner_source
from pipeline.runs import Roots
from pipeline.train import recipe, trainer
from pipeline.train.recipe import PHASE_KEYS, merge_phase, plan_phases, train_recipe
from pipeline.train.trainer import train

# the tiny recipe: phase 0 at 64x96, then 2 epochs at 96x128 with a lower lr and the average
PHASE = {"height": 96, "width": 128, "epochs": 2, "lr": 0.001, "ema": 0.9}
REFINE = {"patch": 24, "context": 4, "tile": 8, "band_margin": 2, "width": 4, "steps": 3,
          "images_per_batch": 2, "patches_per_image": 2, "log_every": 1, "num_workers": 0}


def weights_equal(a, b) -> bool:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- pure


def test_a_phase_changes_only_its_keys_and_has_no_phases_of_its_own():
    base = default(Config).train
    base = dataclasses.replace(base, loss="boundary_bce_dice", progressive=[{"epochs": 2}])
    merged = merge_phase(base, {"height": 384, "width": 576, "lr": 1, "crop": [96, 128]}, 0)
    assert (merged.height, merged.width, merged.crop) == (384, 576, [96, 128])
    assert merged.lr == 1.0 and isinstance(merged.lr, float)  # typed like a YAML value
    assert merged.progressive == [] and merged.loss == "boundary_bce_dice"  # the rest stays
    assert dataclasses.replace(merged, height=base.height, width=base.width, lr=base.lr,
                               crop=base.crop, progressive=base.progressive) == base
    assert base.height == default(Config).train.height  # pure: the input is unchanged


@pytest.mark.parametrize("changes, message", [
    ({"heigth": 384}, r"progressive\[1\]: unknown train key 'heigth' \(did you mean height"),
    ({"seed": 1}, r"progressive\[1\]: train.seed cannot change per phase \(a setting of the"),
    ({"init_from": "x.pt"}, "cannot change per phase .each phase starts from the previous"),
    ({"progressive": []}, "cannot change per phase .phases do not nest"),
    ({"num_workers": 0}, "train.num_workers cannot change per phase"),
    ({"epochs": "four"}, r"train.progressive\[1\]: epochs: expected int"),
])
def test_a_key_a_phase_may_not_set_is_one_line_naming_it(changes, message):
    with pytest.raises(PipelineError, match=message) as err:
        merge_phase(default(Config).train, changes, 1)
    assert "\n" not in str(err.value)


def test_every_allowed_key_is_a_train_key():
    assert set(PHASE_KEYS) <= set(dataclasses.asdict(default(Config).train))
    assert {"height", "width", "epochs", "lr", "warmup_epochs", "ema", "loss", "batch_size",
            "crop"} <= set(PHASE_KEYS)


def test_phases_build_on_each_other_and_chain_through_init_from(tmp_path):
    cfg = load_config([], ["train.init_from=start.pt", "train.loss=boundary_bce_dice",
                           "train.progressive=[{height: 96, epochs: 2}, {width: 160}]"])
    run = Roots(checkpoints=tmp_path / "ck").run("m", 0)
    phases = plan_phases(cfg, run)
    assert [p.run for p in phases] == [run.phase_paths(0), run.phase_paths(1), run]
    t0, t1, t2 = (p.cfg.train for p in phases)
    assert t0 == dataclasses.replace(cfg.train, progressive=[])  # phase 0: the base run
    assert (t1.height, t1.width, t1.epochs) == (96, cfg.train.width, 2)
    assert (t2.height, t2.width, t2.epochs) == (96, 160, 2)  # phase 2 continues phase 1
    assert [t.init_from for t in (t0, t1, t2)] == [
        "start.pt", str(run.phase_paths(0).best), str(run.phase_paths(1).best)]
    assert all(t.loss == "boundary_bce_dice" and t.progressive == [] for t in (t0, t1, t2))
    assert all(p.cfg.model == cfg.model and p.cfg.refine == cfg.refine for p in phases)
    (single,) = plan_phases(load_config([]), run)  # no phases: the run itself, as before
    assert single.run == run and single.cfg == load_config([])


def test_a_phase_with_a_bad_setting_fails_before_anything_trains(tmp_path):
    cfg = load_config([], ["train.progressive=[{loss: focal}]"])
    with pytest.raises(PipelineError, match=r"train.progressive\[0\]: train.loss must be one"):
        plan_phases(cfg, Roots(checkpoints=tmp_path).run("m", 0))
    cfg = load_config([], ["train.progressive=[{epochs: 0}]"])
    with pytest.raises(PipelineError, match=r"train.progressive\[0\]: train.epochs"):
        plan_phases(cfg, Roots(checkpoints=tmp_path).run("m", 0))


# --------------------------------------------------------------------------- training


def recipe_config(tiny_data, tiny_cache, **extra):
    return tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=2, progressive=[PHASE],
                       **extra)


@pytest.fixture(scope="module")
def progressive(tiny_data, tiny_folds, tiny_cache, tmp_path_factory):
    """A finished 2-phase tiny recipe on fold 0 (read-only: copy it to change it)."""
    run = tiny_run(tmp_path_factory.mktemp("recipe"))
    record = train_recipe(recipe_config(tiny_data, tiny_cache), 0, folds_path=tiny_folds,
                          run=run, progress=False)
    return run, record


def test_a_progressive_run_equals_train_then_train_with_init_from(
        progressive, tiny_data, tiny_folds, tiny_cache, tmp_path):
    run, record = progressive
    first = tiny_run(tmp_path, "first")
    train(tiny_config(tiny_data, tiny_cache, epochs=1, max_steps=2), 0, folds_path=tiny_folds,
          run=first, progress=False)
    second = tiny_run(tmp_path, "second")
    manual = train(tiny_config(tiny_data, tiny_cache, max_steps=2, init_from=str(first.best),
                               **PHASE), 0, folds_path=tiny_folds, run=second, progress=False)
    assert weights_equal(run.phase_paths(0).best, first.best)
    assert weights_equal(run.best, second.best) and weights_equal(run.last, second.last)
    assert not weights_equal(run.best, run.phase_paths(0).best)
    assert (record.height, record.width, record.epochs) == (96, 128, 2)
    assert record.val_dice == manual.val_dice
    # the final checkpoint's config is the manual run's, its init_from the chain's link
    final = checkpoint_config(load_checkpoint(run.best))
    alone = checkpoint_config(load_checkpoint(second.best))
    assert final.train.init_from == str(run.phase_paths(0).best)
    assert dataclasses.replace(final.train, init_from="") == \
        dataclasses.replace(alone.train, init_from="")
    assert final.model == alone.model and final.train.progressive == []
    phase0 = checkpoint_config(load_checkpoint(run.phase_paths(0).best))
    assert (phase0.train.height, phase0.train.progressive) == (64, [])
    # the earlier phase keeps its record and curves in its own folders; the run's are the final
    assert run.phase_paths(0).record.is_file() and run.record.is_file()
    assert (run.phase_paths(0).live_dir / "curves.png").is_file()
    assert (run.live_dir / "curves.png").is_file()


def copy_run(run, tmp_path, name="copy"):
    copy = tiny_run(tmp_path, name)
    shutil.copytree(run.checkpoint_dir.parents[1], copy.checkpoint_dir.parents[1])
    shutil.copytree(run.record.parents[1], copy.record.parents[1])
    shutil.copytree(run.live_dir.parents[1], copy.live_dir.parents[1])
    return copy


def test_resume_skips_a_finished_phase_and_continues_the_interrupted_one(
        progressive, tiny_data, tiny_folds, tiny_cache, tmp_path, monkeypatch):
    done, _ = progressive
    cfg = recipe_config(tiny_data, tiny_cache)
    run = tiny_run(tmp_path)
    real_log, calls = trainer.log_epoch, []

    def crash_in_phase_1(row, epochs):  # phase 0 has 1 epoch: the 2nd is phase 1's first
        real_log(row, epochs)
        calls.append(row["epoch"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "log_epoch", crash_in_phase_1)
    with pytest.raises(KeyboardInterrupt):
        train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    monkeypatch.setattr(trainer, "log_epoch", real_log)
    assert load_checkpoint(run.last)["epoch"] == 0 and not run.record.exists()
    stamp = run.phase_paths(0).last.stat().st_mtime_ns

    trained = []
    monkeypatch.setattr(recipe, "train", lambda c, *a, **k: trained.append(
        (c.train.height, k["resume"])) or train(c, *a, **k))
    record = train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert trained == [(96, True)]  # phase 0 skipped, phase 1 continued
    assert run.phase_paths(0).last.stat().st_mtime_ns == stamp
    assert weights_equal(run.best, done.best) and weights_equal(run.last, done.last)
    assert record.epochs == 2


def test_phases_after_a_resumed_one_start_afresh(progressive, tiny_data, tiny_folds, tiny_cache,
                                                tmp_path, monkeypatch):
    # a finished older run, then a fresh run killed in phase 0: its old phase-0 record must not
    # mark phase 0 finished, and phase 1's old last.pt must not be resumed
    done, _ = progressive
    run = copy_run(done, tmp_path)
    cfg = recipe_config(tiny_data, tiny_cache)

    def crash(row, epochs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "log_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False)
    assert not run.phase_paths(0).record.exists()
    monkeypatch.undo()
    trained = []
    monkeypatch.setattr(recipe, "train", lambda c, *a, **k: trained.append(
        (c.train.height, k["resume"])) or train(c, *a, **k))
    train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert trained == [(64, True), (96, False)]


def test_refine_train_writes_the_refiner_in_the_run_and_resume_keeps_it(
        progressive, tiny_data, tiny_folds, tiny_cache, tmp_path, capsys):
    run = copy_run(progressive[0], tmp_path)
    cfg = recipe_config(tiny_data, tiny_cache)
    cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, train=True, **REFINE))
    best = run.best.stat().st_mtime_ns
    train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert run.best.stat().st_mtime_ns == best  # both phases finished: nothing retrained
    _, stored, _ = load_refiner(run.refiner)
    assert stored.steps == 3 and stored.train
    ckpt = torch.load(run.refiner, weights_only=False)
    assert ckpt["coarse"] == [96, 128]  # the final phase's input size
    assert refiner_source(run.refiner) == refiner_key(cfg, run.best)
    assert f"wrote {run.refiner}: 3 steps" in capsys.readouterr().out

    stamp = run.refiner.stat().st_mtime_ns
    train_recipe(cfg, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert run.refiner.stat().st_mtime_ns == stamp  # same best.pt and settings: kept
    assert "edge refiner up to date" in capsys.readouterr().out
    other = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, steps=2))
    train_recipe(other, 0, folds_path=tiny_folds, run=run, progress=False, resume=True)
    assert load_refiner(run.refiner)[1].steps == 2  # other settings: retrained


@pytest.mark.parametrize("change", ["phase 0's settings", "the folds file"])
def test_a_finished_phase_made_another_way_is_not_kept(
        progressive, tiny_data, tiny_folds, tiny_cache, tmp_path, change):
    """A resumed recipe keeps an earlier phase only when it finished with this run's settings,
    images and starting weights, never on the files' presence alone: a phase made another way
    (other settings, or weights trained on a fold that the remade folds file holds out) is
    refused in one line, and the run starts over without --resume."""
    run = copy_run(progressive[0], tmp_path)
    cfg, folds = recipe_config(tiny_data, tiny_cache), tiny_folds
    if change == "the folds file":
        folds = tmp_path / "remade.csv"  # the same cars with folds 0 and 1 exchanged
        remade = load_folds(tiny_folds)
        write_folds(remade.assign(fold=1 - remade["fold"]), folds)
    else:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.002))
    with pytest.raises(PipelineError, match="phase0/last.pt: was trained with other settings"):
        train_recipe(cfg, 0, folds_path=folds, run=run, progress=False, resume=True)
    record = train_recipe(cfg, 0, folds_path=folds, run=run, progress=False)
    assert record.epochs == 2 and not weights_equal(run.best, progressive[0].best)


def test_a_copied_finished_recipe_resumes_with_nothing_to_do(progressive, tiny_data,
                                                             tiny_folds, tiny_cache, tmp_path,
                                                             monkeypatch):
    """The key holds the starting weights' bytes, not their path: a moved run still resumes."""
    run = copy_run(progressive[0], tmp_path)
    trained = []
    monkeypatch.setattr(recipe, "train", lambda c, *a, **k: trained.append(
        (c.train.height, k["resume"])) or train(c, *a, **k))
    train_recipe(recipe_config(tiny_data, tiny_cache), 0, folds_path=tiny_folds, run=run,
                 progress=False, resume=True)
    assert trained == [(96, True)]  # phase 0 kept; the final phase has nothing left to train
    assert weights_equal(run.best, progressive[0].best)


def test_without_refine_train_no_refiner_is_written(progressive):
    run, _ = progressive
    assert not run.refiner.exists()
