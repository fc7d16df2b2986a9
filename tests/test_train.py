"""The training stage: schedules, loops, the core ``train()``, resume, bad input and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from typer.testing import CliRunner

import pipeline.train as train_mod
import pipeline.training.data as training_data
from pipeline.config import Config, FoldsConfig, ModelConfig, TrainConfig, load_config
from pipeline.data.dataset import SegmentationDataset, build_cache, cache_paths
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.folds import make_folds, write_folds
from pipeline.losses import build_loss
from pipeline.metrics import dice_per_image, summarize
from pipeline.models.checkpoint import checkpoint_config, load_checkpoint, load_model
from pipeline.models.factory import build_model
from pipeline.train import app, run_paths, train
from pipeline.training.loop import Precision, evaluate, train_one_epoch
from pipeline.training.schedule import Schedule, build_optimizer, lr_at, lr_restarts_at

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"model", "fold", "best_epoch", "val_dice", "val_accuracy", "val_precision",
               "val_recall", "train_loss", "epochs", "images_per_s", "seconds", "height",
               "width", "device"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folds_csv(tiny_data, tmp_path_factory) -> Path:
    folds = make_folds(train_index(tiny_data), FoldsConfig(n_folds=2, seed=0, stratify="none"))
    return write_folds(folds, tmp_path_factory.mktemp("folds") / "folds.csv")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_overrides(root: Path, cache: Path, **train: object) -> list[str]:
    """A config small enough for a 2-core CPU: 64x96 images, a U-Net of width 8 and depth 2."""
    values = {"height": 64, "width": 96, "epochs": 2, "batch_size": 4, "num_workers": 0,
              "lr": 0.003, "max_steps": 3, "threads": 1, "warmup_epochs": 0.5, **train}
    model = ["model.arch=unet", "model.name=tiny", "model.base_width=8", "model.depth=2"]
    return ([f"data.root={root}", f"data.cache_dir={cache}"] + model
            + [f"train.{k}={v}" for k, v in values.items()])


def tiny_cfg(root: Path, cache: Path, **train: object) -> Config:
    return load_config([], tiny_overrides(root, cache, **train))


def outputs(tmp_path: Path, name: str = "run") -> dict:
    base = tmp_path / name
    return {"out_dir": base / "ckpt", "metrics_path": base / "metrics.json",
            "live_dir": base / "live"}


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(("seconds", "_per_s"))}
            for r in history]


# --------------------------------------------------------------------------- schedules


def test_lr_at_phases():
    total, warm, base, floor = 100, 10, 1e-3, 1e-5
    lrs = [lr_at(s, total, warm, base, floor) for s in range(total + 5)]
    assert lrs[0] == pytest.approx(base / warm)  # warm-up starts small...
    assert all(a < b for a, b in itertools.pairwise(lrs[:warm]))  # ...and rises linearly
    assert lrs[warm - 1] == pytest.approx(base) and lrs[warm] == pytest.approx(base)
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))  # then only decays
    mid = (warm + total - 1) / 2  # cosine midpoint, halfway between warm-up and the last step
    assert lr_at(int(mid), total, warm, base, floor) > (base + floor) / 2
    assert lr_at(int(mid) + 1, total, warm, base, floor) < (base + floor) / 2
    assert lrs[total - 1] == pytest.approx(floor) and lrs[-1] == floor  # the last step: min_lr


def test_lr_restarts_cycle():
    lrs = [lr_restarts_at(s, 10, 0, 1.0, 0.0) for s in range(30)]
    assert lrs[0] == lrs[10] == lrs[20] == 1.0  # each cycle restarts at the base lr
    assert lrs[5] == pytest.approx(0.5) and lrs[9] < 0.05


@pytest.mark.parametrize("kind", ["cosine", "warm_restarts", "plateau", "none"])
def test_schedule_state_round_trips(kind):
    cfg = TrainConfig(scheduler=kind, lr=0.01, epochs=3, plateau_patience=0)

    def make():
        opt = build_optimizer(nn.Linear(2, 2), cfg)
        return opt, Schedule(opt, cfg, steps_per_epoch=4)

    opt, sched = make()
    for _ in range(5):
        opt.step()
        sched.step_batch()
    sched.step_epoch(0.5)
    sched.step_epoch(0.4)  # plateau: no gain -> cut
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt.step(), opt2.step()
    sched.step_batch(), sched2.step_batch()
    assert sched2.lr == pytest.approx(sched.lr)
    if kind != "none":
        assert sched.lr != pytest.approx(0.01)  # it really moved


def test_unknown_scheduler_and_optimizer_are_rejected():
    opt = build_optimizer(nn.Linear(2, 2), TrainConfig())
    with pytest.raises(PipelineError, match="train.scheduler"):
        Schedule(opt, TrainConfig(scheduler="step"), 4)
    with pytest.raises(PipelineError, match="train.optimizer"):
        build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd"))


# --------------------------------------------------------------------------- loops


def test_tiny_model_overfits_a_tiny_batch(tiny_data):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = train_index(tiny_data).head(4)
    loader = DataLoader(SegmentationDataset(rows, 64, 96), batch_size=4)
    model = build_model(ModelConfig(arch="unet", base_width=8, depth=2))
    cfg = TrainConfig(lr=0.01, scheduler="none", epochs=30)
    opt = build_optimizer(model, cfg)
    loss_fn = build_loss(cfg)
    x, y = next(iter(loader))

    def dice() -> float:
        # batch statistics: the batch is the whole data set here, and 30 steps are too few for
        # BatchNorm's running averages to catch up with weights that move this fast
        model.train()
        with torch.no_grad():
            return float(dice_per_image(model(x) > 0, y > 0.5).mean())

    before = dice()
    losses = []
    for _ in range(30):
        result = train_one_epoch(model, loader, loss_fn, opt, Schedule(opt, cfg, 1),
                                 torch.amp.GradScaler("cpu", enabled=False),
                                 device=torch.device("cpu"), precision=Precision(),
                                 progress=False)
        losses.append(result.loss_sum / result.images)
    after = dice()
    assert losses[-1] < 0.5 * losses[0], losses
    assert after > before + 0.2 and after > 0.95, (before, after)


class _Fixed(nn.Module):
    """Logits that do not depend on the input: a vertical band, for exact metric checks."""

    def __init__(self, h: int, w: int):
        super().__init__()
        band = torch.full((1, 1, h, w), -4.0)
        band[..., w // 4: 3 * w // 4] = 4.0
        self.register_buffer("band", band)

    def forward(self, x):
        return self.band.expand(x.shape[0], -1, -1, -1)


@pytest.mark.parametrize("full_res", [False, True])
def test_evaluate_matches_an_independent_computation(tiny_data, full_res):
    rows = train_index(tiny_data).head(5)
    ds = SegmentationDataset(rows, 32, 48, full_res=full_res)
    model = _Fixed(32, 48)
    counts, _, n = evaluate(model, DataLoader(ds, batch_size=2), build_loss(TrainConfig()),
                                   device=torch.device("cpu"), precision=Precision(),
                                   full_res=full_res, progress=False)
    assert n == 5 and counts[-1] == 5
    items = [ds[i] for i in range(5)]
    if full_res:  # the reference: upsample the logits to 64x96 and compare to the source GIFs
        target = torch.stack([it[2] for it in items])
        logits = F.interpolate(model.band, size=(64, 96), mode="bilinear", align_corners=False)
    else:
        target = torch.stack([it[1][0] for it in items])
        logits = model.band
    pred = (logits[0, 0] > 0).expand_as(target)
    expected_dice = dice_per_image(pred.numpy(), target.numpy()).mean()
    assert summarize(counts)["dice"] == pytest.approx(expected_dice)
    tp = int((pred & (target > 0)).sum())
    assert int(counts[0]) == tp
    assert int(counts[:4].sum()) == target.numel()


# --------------------------------------------------------------------------- train()


def test_train_writes_checkpoints_metrics_and_live_files(tiny_data, folds_csv, cache_dir,
                                                         tmp_path):
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=2)
    out = outputs(tmp_path)
    metrics = train(cfg, 0, folds_path=folds_csv, progress=False, **out)
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["model"] == "tiny" and metrics["fold"] == 0 and metrics["epochs"] == 2
    assert 0 < metrics["val_dice"] <= 1 and metrics["images_per_s"] > 0
    assert json.loads(out["metrics_path"].read_text()) == metrics
    best, last = load_checkpoint(out["out_dir"] / "best.pt"), load_checkpoint(out["out_dir"] /
                                                                              "last.pt")
    assert best["epoch"] == metrics["best_epoch"]
    assert best["metrics"]["val_dice"] == pytest.approx(metrics["val_dice"])
    assert "train_state" not in best and last["train_state"]["epoch"] == 1
    assert checkpoint_config(last) == cfg
    model, _ = load_model(out["out_dir"] / "best.pt")
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
    # DVCLive and the PNG, readable offline; nothing written outside the live dir
    live = out["live_dir"]
    assert (live / "curves.png").stat().st_size > 1000
    dice_log = pd.read_csv(live / "plots" / "metrics" / "val_dice.tsv", sep="\t")
    assert len(dice_log) == 2
    assert dice_log["val_dice"].iloc[-1] == pytest.approx(last["metrics"]["val_dice"])
    assert not (tmp_path / "dvc.yaml").exists()


def test_paths_follow_the_model_label(tiny_data, cache_dir):
    cfg = tiny_cfg(tiny_data, cache_dir)
    paths = run_paths(cfg, 3, "ck", "me", "dl")
    assert paths == {"out_dir": Path("ck/tiny/fold3"), "metrics_path": Path("me/tiny/fold3.json"),
                     "live_dir": Path("dl/tiny/fold3")}


def test_no_cache_at_kaggle_resolution(tiny_data, cache_dir):
    assert training_data.cache_dir(tiny_cfg(tiny_data, cache_dir)) == str(cache_dir)
    full = tiny_cfg(tiny_data, cache_dir, height=1280, width=1918)
    assert training_data.cache_dir(full) is None


def test_resume_ends_in_the_same_state_as_an_uninterrupted_run(tiny_data, folds_csv, cache_dir,
                                                               tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=2, max_steps=3)  # augmentation on
    straight = outputs(tmp_path, "straight")
    train(cfg, 0, folds_path=folds_csv, progress=False, **straight)

    interrupted = outputs(tmp_path, "interrupted")
    real_log = train_mod.log_epoch

    def crash_after_first_epoch(row, epochs):
        real_log(row, epochs)
        raise KeyboardInterrupt  # like Ctrl-C (or kill -9) once last.pt of epoch 1 is written

    monkeypatch.setattr(train_mod, "log_epoch", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, 0, folds_path=folds_csv, progress=False, **interrupted)
    assert load_checkpoint(interrupted["out_dir"] / "last.pt")["epoch"] == 0
    monkeypatch.setattr(train_mod, "log_epoch", real_log)
    resumed = train(cfg, 0, folds_path=folds_csv, progress=False, resume=True, **interrupted)

    a = load_checkpoint(straight["out_dir"] / "last.pt")
    b = load_checkpoint(interrupted["out_dir"] / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    history_a = a["train_state"]["progress"]["history"]
    assert timeless(history_a) == timeless(b["train_state"]["progress"]["history"])
    assert a["train_state"]["scheduler"] == b["train_state"]["scheduler"]
    straight_metrics = json.loads(straight["metrics_path"].read_text())
    assert resumed["val_dice"] == straight_metrics["val_dice"]
    # the DVCLive log was rebuilt from the checkpoint: two epochs, no duplicate
    log = pd.read_csv(interrupted["live_dir"] / "plots" / "metrics" / "train_loss.tsv", sep="\t")
    assert log["step"].tolist() == [0, 1]


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(
        tiny_data, folds_csv, cache_dir, tmp_path):
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=1, max_steps=1)
    out = outputs(tmp_path)
    first = train(cfg, 0, folds_path=folds_csv, progress=False, resume=True, **out)
    stamp = (out["out_dir"] / "last.pt").stat().st_mtime_ns
    again = train(cfg, 0, folds_path=folds_csv, progress=False, resume=True, **out)
    assert again["val_dice"] == first["val_dice"] and again["epochs"] == 1
    assert (out["out_dir"] / "last.pt").stat().st_mtime_ns == stamp  # nothing retrained


def test_resume_refuses_a_different_model(tiny_data, folds_csv, cache_dir, tmp_path):
    out = outputs(tmp_path)
    train(tiny_cfg(tiny_data, cache_dir, epochs=1, max_steps=1), 0, folds_path=folds_csv,
          progress=False, **out)
    other = load_config([], tiny_overrides(tiny_data, cache_dir, epochs=2) + ["model.depth=3"])
    with pytest.raises(PipelineError, match="different model config"):
        train(other, 0, folds_path=folds_csv, progress=False, resume=True, **out)


def test_fold_minus_one_trains_on_everything(tiny_data, folds_csv, cache_dir, tmp_path):
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=2, max_steps=2)
    out = outputs(tmp_path)
    metrics = train(cfg, -1, folds_path=folds_csv, progress=False, **out)
    assert metrics["val_dice"] is None and metrics["best_epoch"] == 1  # best = last
    assert load_checkpoint(out["out_dir"] / "best.pt")["epoch"] == 1
    assert json.loads(out["metrics_path"].read_text())["fold"] == -1


def test_early_stopping_after_patience(tiny_data, folds_csv, cache_dir, tmp_path, monkeypatch):
    dices = iter([0.9, 0.8, 0.85, 0.95])

    def fake_evaluate(model, loader, loss_fn, **kwargs):
        d = next(dices)  # 1 image with dice d: tp/fp/fn/tn are irrelevant here
        return torch.tensor([1, 0, 0, 1, d, 1], dtype=torch.float64), 0.1, 1

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=4, max_steps=1, patience=2)
    out = outputs(tmp_path)
    metrics = train(cfg, 0, folds_path=folds_csv, progress=False, **out)
    assert metrics["epochs"] == 3 and metrics["best_epoch"] == 0
    assert metrics["val_dice"] == pytest.approx(0.9)
    assert load_checkpoint(out["out_dir"] / "best.pt")["epoch"] == 0
    assert load_checkpoint(out["out_dir"] / "last.pt")["train_state"]["progress"]["stopped"]


# --------------------------------------------------------------------------- bad input


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_missing_folds_file(tiny_data, cache_dir, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_cfg(tiny_data, cache_dir), 0, folds_path=tmp_path / "nope.csv",
              progress=False, **outputs(tmp_path))
    assert "nope.csv" in _one_line(exc)
    assert not (tmp_path / "run").exists()


def test_fold_out_of_range(tiny_data, folds_csv, cache_dir, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_cfg(tiny_data, cache_dir), 2, folds_path=folds_csv, progress=False,
              **outputs(tmp_path))
    assert "fold 2 does not exist" in _one_line(exc)


def test_missing_data_root(folds_csv, cache_dir, tmp_path):
    with pytest.raises(PipelineError) as exc:
        train(tiny_cfg(tmp_path / "nowhere", cache_dir), 0, folds_path=folds_csv,
              progress=False, **outputs(tmp_path))
    assert str(tmp_path / "nowhere") in _one_line(exc)


def test_folds_sharing_a_car_are_refused(tiny_data, folds_csv, cache_dir, tmp_path):
    folds = pd.read_csv(folds_csv, dtype={"car_id": str})
    car = folds["car_id"].iloc[0]
    first = folds.index[folds["car_id"] == car][0]
    folds.loc[first, "fold"] = 1 - folds.loc[first, "fold"]  # one angle leaks to the other side
    broken = tmp_path / "leaky.csv"
    folds.to_csv(broken, index=False)
    with pytest.raises(PipelineError) as exc:
        train(tiny_cfg(tiny_data, cache_dir), 0, folds_path=broken, progress=False,
              **outputs(tmp_path))
    assert car in _one_line(exc) and "leaky.csv" in str(exc.value)


def test_unreadable_image_keeps_earlier_outputs(tiny_data, folds_csv, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    victim = sorted((root / "train").glob("*.jpg"))[5]
    victim.write_bytes(b"\xff\xd8 truncated")
    out = outputs(tmp_path)
    out["out_dir"].mkdir(parents=True)
    (out["out_dir"] / "last.pt").write_bytes(b"an earlier run")
    with pytest.raises(PipelineError) as exc:
        train(tiny_cfg(root, tmp_path / "cache"), 0, folds_path=folds_csv, progress=False, **out)
    assert victim.name in _one_line(exc)
    assert (out["out_dir"] / "last.pt").read_bytes() == b"an earlier run"
    assert not out["metrics_path"].exists()


def test_error_inside_a_dataloader_worker_is_one_line(tiny_data, folds_csv, tmp_path):
    cache = tmp_path / "cache"
    rows = train_index(tiny_data)
    build_cache(rows, 64, 96, cache, progress=False)
    img = pd.read_csv(folds_csv).query("fold == 1")["img"].iloc[0]  # a training image
    cached, _ = cache_paths(img, 64, 96, cache)
    stamp = cached.stat()
    cached.write_bytes(b"garbage")  # corrupt after the cache check, as a disk error would
    os.utime(cached, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    cfg = tiny_cfg(tiny_data, cache, num_workers=1, max_steps=0, augment=False)
    with pytest.raises(PipelineError) as exc:
        train(cfg, 0, folds_path=folds_csv, progress=False, **outputs(tmp_path))
    assert str(cached) in _one_line(exc) and "Traceback" not in str(exc.value)


# --------------------------------------------------------------------------- CLI


def _write_config(path: Path, root: Path, cache: Path) -> Path:
    lines = ["data:", f"  root: {root}", f"  cache_dir: {cache}", "model:", "  arch: unet",
             "  name: tiny", "  base_width: 8", "  depth: 2", "train:", "  height: 64",
             "  width: 96", "  epochs: 1", "  batch_size: 4", "  num_workers: 0",
             "  max_steps: 2", "  threads: 1"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_trains_and_reports(tiny_data, folds_csv, cache_dir, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, cache_dir)
    args = ["--fold", "1", "-c", str(config), "--folds", str(folds_csv),
            "--checkpoints", str(tmp_path / "ck"), "--metrics", str(tmp_path / "me"),
            "--live", str(tmp_path / "dl"), "--no-progress", "train.lr=0.001"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "wrote" in result.output
    metrics = json.loads((tmp_path / "me" / "tiny" / "fold1.json").read_text())
    assert metrics["fold"] == 1
    ckpt = load_checkpoint(tmp_path / "ck" / "tiny" / "fold1" / "last.pt")
    assert ckpt["config"]["train"]["lr"] == 0.001  # the override reached the run


def test_cli_defaults_need_only_the_fold(tiny_data, tmp_path, monkeypatch):
    """configs/base.yaml, folds/folds.csv, checkpoints/, metrics/ and dvclive/ by default."""
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "base.yaml", tmp_path / "configs" / "base.yaml")
    monkeypatch.chdir(tmp_path)
    root = Path(load_config(["configs/base.yaml"]).data.root)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.symlink_to(tiny_data, target_is_directory=True)
    folds = make_folds(train_index(root), FoldsConfig(n_folds=2, seed=0, stratify="none"))
    write_folds(folds, "folds/folds.csv")
    shrink = ["train.epochs=1", "train.max_steps=1", "train.height=32", "train.width=48",
              "train.num_workers=0", "train.threads=1", "model.base_width=4", "model.depth=2"]
    result = CliRunner().invoke(app, ["--fold", "0", "--no-progress", *shrink])
    assert result.exit_code == 0, result.output
    base = load_config(["configs/base.yaml"])
    label = base.model.label
    assert (tmp_path / "checkpoints" / label / "fold0" / "best.pt").is_file()
    assert (tmp_path / "metrics" / label / "fold0.json").is_file()
    assert (tmp_path / "dvclive" / label / "fold0" / "curves.png").is_file()
    assert (tmp_path / base.data.cache_dir / "32x48" / "images").is_dir()


@pytest.mark.parametrize("extra, message", [
    (["--fold", "9"], "fold 9 does not exist"),
    (["--fold", "0", "train.lr_max=1"], "unknown config key 'train.lr_max'"),
    (["--fold", "0", "train.loss=focal"], "train.loss must be one of"),
])
def test_cli_bad_input_is_one_error_line(tiny_data, folds_csv, cache_dir, tmp_path, extra,
                                         message):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, cache_dir)
    args = ["-c", str(config), "--folds", str(folds_csv), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "me"), "--live", str(tmp_path / "dl"), "--no-progress"]
    result = CliRunner().invoke(app, args + extra)
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tiny_data, folds_csv, cache_dir, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, cache_dir)
    args = [sys.executable, "-m", "pipeline.train", "--fold", "-1", "-c", str(config),
            "--folds", str(folds_csv), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "me"), "--live", str(tmp_path / "dl"), "--no-progress",
            "train.epochs=6", "train.max_steps=2", "train.live=false"]
    last = tmp_path / "ck" / "tiny" / "fold-1" / "last.pt"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 5
    done = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"resuming {last} at epoch {killed_at + 2}/6" in done.stdout
    state = load_checkpoint(last)["train_state"]
    assert state["epoch"] == 5
    assert [r["epoch"] for r in state["progress"]["history"]] == list(range(6))
    assert math.isfinite(json.loads((tmp_path / "me" / "tiny" / "fold-1.json").read_text())
                         ["train_loss"])


def test_plan_batches_fits_the_remaining_time():
    from pipeline.training.budget import plan_batches

    # 600 s at 1 s per batch, 1000 batches at most
    assert plan_batches(600, 1.0, 1000) == 600
    assert plan_batches(600, 1.0, 1000, reserve=0.1) == 540  # a tenth kept for validation
    assert plan_batches(600, 0.1, 1000) == 1000  # fast: capped at every epoch
    assert plan_batches(600, 1e4, 1000) == 1  # slow: one batch at least
    # 300 batches took 400 s: 200 s left at 4/3 s per batch is 150 more
    assert plan_batches(600, 400 / 300, 1000, spent_s=400, done=300) == 450
    assert plan_batches(600, 2.0, 1000, spent_s=700, done=300) == 300  # over: stop here


def test_epoch_batches_spread_a_plan_over_epochs():
    from pipeline.training.budget import describe, epoch_batches

    assert [epoch_batches(370, 154, e) for e in range(4)] == [154, 154, 62, 0]
    assert [epoch_batches(54, 100, e) for e in range(2)] == [54, 0]  # part of one epoch
    assert describe(370, 154, 30) == "2.4 of 30 epochs (370 batches)"


def test_probe_can_shorten_an_epoch(tiny_data):
    torch.manual_seed(0)
    rows = train_index(tiny_data).head(12)
    loader = DataLoader(SegmentationDataset(rows, 64, 96), batch_size=2)  # 6 batches
    model = build_model(ModelConfig(arch="unet", base_width=8, depth=2))
    cfg = TrainConfig(scheduler="none")
    opt = build_optimizer(model, cfg)
    paces = []

    def on_probe(pace: float) -> int:
        paces.append(pace)
        return 3

    result = train_one_epoch(model, loader, build_loss(cfg), opt, Schedule(opt, cfg, 6),
                             torch.amp.GradScaler("cpu", enabled=False),
                             device=torch.device("cpu"), precision=Precision(),
                             progress=False, probe_steps=2, probe_skip=1, on_probe=on_probe)
    assert len(paces) == 1 and paces[0] > 0
    assert result.images == 6 and result.batches == 3  # 3 batches of 2, not 6


def test_a_budget_shorter_than_an_epoch_trains_part_of_one(tiny_data, folds_csv, cache_dir,
                                                          tmp_path, monkeypatch, capsys):
    from pipeline.training import budget

    monkeypatch.setattr(budget, "PROBE_STEPS", 1)
    monkeypatch.setattr(budget, "PROBE_SKIP", 0)
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=3)  # 3 batches per epoch (max_steps)
    metrics = train(cfg, 0, folds_path=folds_csv, progress=False, time_budget_s=1e-3,
                    **outputs(tmp_path))
    out = capsys.readouterr().out
    assert "planning 0.333 of 3 epochs (1 batches)" in out, out
    assert metrics["epochs"] == 1
    history = load_checkpoint(tmp_path / "run" / "ckpt" / "last.pt")["train_state"]["progress"][
        "history"]
    assert [r["train_batches"] for r in history] == [1]
    assert history[0]["lr"] == pytest.approx(cfg.train.min_lr)  # the decay ended in budget


def test_a_budget_of_some_epochs_ends_the_decay_inside_it(tiny_data, folds_csv, cache_dir,
                                                         tmp_path, monkeypatch):
    from pipeline.training import budget

    monkeypatch.setattr(budget, "PROBE_STEPS", 1)
    monkeypatch.setattr(budget, "PROBE_SKIP", 0)
    # whatever the pace, 5 of 6 batches fit: the plan is 1.67 epochs, the second one partial
    monkeypatch.setattr(budget, "plan_batches", lambda *a, **k: min(5, a[2]))
    cfg = tiny_cfg(tiny_data, cache_dir, epochs=2)
    train(cfg, 0, folds_path=folds_csv, progress=False, time_budget_s=60, **outputs(tmp_path))
    history = load_checkpoint(tmp_path / "run" / "ckpt" / "last.pt")["train_state"]["progress"][
        "history"]
    assert [r["train_batches"] for r in history] == [3, 2]
    assert history[0]["lr"] > 10 * cfg.train.min_lr
    assert history[-1]["lr"] == pytest.approx(cfg.train.min_lr)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_is_measured_from_the_last_reset():
    from pipeline.train import peak_memory_mib, reset_peak_memory

    cpu = torch.device("cpu")
    block = torch.ones(128 * 2**20 // 4)  # 128 MiB, touched: the lifetime peak is above it
    del block
    reset_peak_memory(cpu)
    # right after a reset the peak is the current resident size, not the lifetime peak
    assert abs(peak_memory_mib(cpu) - _rss_mib()) < 16
    block = torch.ones(32 * 2**20 // 4)
    assert peak_memory_mib(cpu) >= _rss_mib() - 1  # and it follows what is resident
    del block
