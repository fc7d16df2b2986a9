"""``python -m pipeline.benchmark run|table``: every model config on the same folds and budget.

``run`` trains each model config (and each combination of ``--grid`` values, e.g. the
learning-rate x batch-size grid) on each fold of ``benchmark.folds`` with the same settings and
the same budget (``train.epochs``, or ``benchmark.time_budget_min`` minutes of training per
model and fold), evaluates the best checkpoint out of fold at full resolution with TTA, and
writes the comparison. ``table`` rebuilds the comparison from the metrics files alone (what the
DVC stage runs after the train and evaluate stages):

    metrics/<label>/fold<K>.json   written by pipeline.train (val Dice, train images/s, device)
    metrics/<label>/cv.json        written by pipeline.evaluate (full-res TTA Dice per fold)

Outputs, each written atomically: ``reports/benchmark.md`` (a Markdown table sorted by CV Dice,
with the command that made it), ``reports/benchmark.json`` and ``reports/benchmark.png`` (CV
Dice against inference images/s).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import re
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.cli import ConfigOption, OverridesArgument
from pipeline.config import (
    Config,
    default_paths,
    load_config,
    model_path,
    parse_override,
    to_dict,
)
from pipeline.errors import PipelineError, one_line_errors

FOLD_RE = re.compile(r"^fold(\d+)\.json$")  # fold-1 (all images, no validation) is not CV
CV_KEYS = ("cv_dice", "mean", "dice", "val_dice")


# --------------------------------------------------------------------------- grid


def split_values(text: str) -> list[str]:
    """``"1e-3,3e-4"`` -> ``["1e-3", "3e-4"]``; commas inside ``[...]`` or quotes do not split
    (``"[hflip],[hflip,vflip]"`` is two values)."""
    values, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    return values


def expand_grid(specs: Sequence[str]) -> list[list[str]]:
    """Every combination of ``--grid`` values as override lists, first spec varying slowest.

    ``["train.lr=1e-3,3e-4", "train.batch_size=4,8"]`` ->
    ``[["train.lr=1e-3", "train.batch_size=4"], ["train.lr=1e-3", "train.batch_size=8"],
    ["train.lr=3e-4", "train.batch_size=4"], ["train.lr=3e-4", "train.batch_size=8"]]``.
    No specs -> one empty combination (the plain run).
    """
    axes = []
    seen = set()
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        values = split_values(raw) if sep else []
        if not key or not sep or not values or any(v == "" for v in values):
            raise PipelineError(
                f"--grid '{spec}': expected section.key=value1,value2 (e.g. train.lr=1e-3,3e-4)"
            )
        if key in seen:
            raise PipelineError(f"--grid '{spec}': {key} is given twice; list all values once")
        seen.add(key)
        parse_override(f"{key}={values[0]}")  # a malformed key fails here, not mid-benchmark
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


def run_label(model_label: str, combo: Sequence[str]) -> str:
    """A file-name-safe label: ``unet-small`` or ``unet-small+lr=1e-3+batch_size=4``."""
    parts = [model_label]
    for override in combo:
        key, _, value = override.partition("=")
        parts.append(f"{key.split('.')[-1]}={value}")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "+".join(parts))


@dataclass
class Run:
    """One entry of the comparison: a model config with its grid overrides."""

    label: str
    cfg: Config
    model_config: str
    settings: list[str] = field(default_factory=list)


def build_runs(
    config_paths: Sequence[str],
    model_configs: Sequence[str],
    overrides: Sequence[str] = (),
    grid: Sequence[str] = (),
) -> list[Run]:
    """One :class:`Run` per model config and grid combination; its label is also written to
    ``model.name``, so checkpoints and metrics land in ``<root>/<label>/``."""
    if not model_configs:
        raise PipelineError("no model configs to compare: set benchmark.models or pass --model")
    runs: list[Run] = []
    for model in model_configs:
        for combo in expand_grid(grid):
            cfg = load_config([*config_paths, model], [*overrides, *combo])
            label = run_label(cfg.model.label, combo)
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=label))
            runs.append(Run(label, cfg, str(model), list(combo)))
    labels = [r.label for r in runs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise PipelineError(
            f"two runs would share the label '{dup[0]}' (and its metrics folder); give the "
            "model configs distinct model.name values"
        )
    return runs


# --------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory of a block, in MiB: on CUDA the allocator's peak; elsewhere the process's
    peak resident set size, sampled every 50 ms from /proc (None where that does not exist)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss_mib() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        import resource

        return pages * resource.getpagesize() / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = self._rss_mib()
            if rss is not None:
                self.peak_mib = max(self.peak_mib or 0.0, rss)

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_mib = self._rss_mib()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        elif torch.cuda.is_available():
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20


def count_params(cfg: Config) -> int:
    from pipeline.models.factory import build_model, count_parameters

    return count_parameters(build_model(cfg.model))


# --------------------------------------------------------------------------- the comparison


def _default_train(cfg: Config, fold: int, **kwargs) -> dict:
    from pipeline.train import train

    return train(cfg, fold, **kwargs)


def _default_evaluate(cfg: Config, checkpoints: Sequence[Path], *, folds_path: Path,
                      report_dir: Path, progress: bool) -> dict:
    """Out-of-fold Dice at full resolution with TTA (``pipeline.evaluate``): the summary that
    ``python -m pipeline.evaluate`` writes to ``metrics/<label>/cv.json``; its report (CSV,
    plots, worst images) goes to ``report_dir``."""
    from pipeline.evaluate import evaluate_oof, write_report

    result = evaluate_oof(cfg, cfg.data.root, folds_path, report_dir, checkpoints=checkpoints,
                          progress=progress)
    write_report(result, report_dir, "oof")
    return dict(result.summary)


def measure_inference(
    checkpoint: Path, image_paths: Sequence[Path], cfg: Config, device: str | None = None
) -> float | None:
    """Images/s of the inference engine on ``image_paths`` (full size, ``cfg.predict`` TTA),
    after one untimed warm-up batch: decode, resize, predict, upsample, threshold."""
    import torch

    from pipeline.predict import image_shape, iter_predictions, load_ensemble, pick_device

    if len(image_paths) < 2:
        return None
    dev = pick_device(device)
    ensemble = load_ensemble([checkpoint], dev, cfg.predict)
    shape = image_shape(image_paths[0])  # 1280 x 1918 for Kaggle's photos
    warm, timed = list(image_paths[:1]), list(image_paths[1:])
    for _ in iter_predictions(ensemble, warm, cfg.predict, dev, out_shape=shape):
        pass
    start = time.perf_counter()
    for pred in iter_predictions(ensemble, timed, cfg.predict, dev, out_shape=shape):
        (pred.probs > cfg.predict.threshold).sum().item()  # wait for the device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return len(timed) / (time.perf_counter() - start)


def _val_images(cfg: Config, folds_path: Path, fold: int, n: int) -> list[Path]:
    from pipeline.data.layout import Layout
    from pipeline.folds import load_folds, split

    _, val = split(load_folds(folds_path), fold)
    return [Layout(cfg.data.root).image_path(img) for img in val[:n]]


def _supports(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def compare(
    runs: Sequence[Run],
    folds: Sequence[int],
    *,
    time_budget_min: float = 0.0,
    folds_path: str | Path = "folds/folds.csv",
    metrics_dir: str | Path = "metrics",
    checkpoints_dir: str | Path = "checkpoints",
    live_dir: str | Path = "dvclive",
    out_dir: str | Path = "reports",
    command: str = "",
    speed_images: int = 9,
    train_fn: Callable[..., dict] | None = None,
    evaluate_fn: Callable[..., dict] | None = None,
    rerun: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train and evaluate every run on every fold with the same budget; write the reports.

    Per run: ``train_fn(cfg, fold, folds_path=, out_dir=, metrics_path=, live_dir=, progress=
    [, time_budget_s=])`` (``pipeline.train.train``) for each fold, under the same budget;
    then ``evaluate_fn(cfg, checkpoints, folds_path=, report_dir=, progress=)``
    (``pipeline.evaluate.evaluate_oof``) scores every fold's best checkpoint on its validation
    images at full resolution with TTA, and its summary becomes ``metrics/<label>/cv.json``.
    Inference speed is timed on ``speed_images`` validation images when the summary has none.
    A fold already trained with the same config is reused unless ``rerun``. The rows are then
    read back from the metrics files, exactly as ``table`` does; best CV Dice first.
    """
    train_fn = train_fn or _default_train
    evaluate_fn = evaluate_fn or _default_evaluate
    if not folds:
        raise PipelineError("no folds to compare on: set benchmark.folds or pass --fold")
    if any(f < 0 for f in folds):
        raise PipelineError("benchmark folds must be >= 0: fold -1 has no validation images")
    budget = {}
    if time_budget_min > 0:
        if not _supports(train_fn, "time_budget_s"):
            raise PipelineError(
                "benchmark.time_budget_min needs pipeline.train.train(time_budget_s=...), which "
                "this version lacks; set benchmark.time_budget_min=0 to compare at equal epochs"
            )
        budget = {"time_budget_s": 60.0 * time_budget_min}
    metrics_dir, checkpoints_dir = Path(metrics_dir), Path(checkpoints_dir)
    folds_path = Path(folds_path)
    device = _device()
    rows = []
    for run in runs:
        label_dir = metrics_dir / run.label
        for fold in folds:
            out = checkpoints_dir / run.label / f"fold{fold}"
            metrics_path = label_dir / f"fold{fold}.json"
            if not rerun and finished(run.cfg, metrics_path, out / "best.pt") is not None:
                if progress:
                    print(f"{run.label} fold {fold}: already trained with these settings "
                          f"({metrics_path}); reusing it", flush=True)
                continue
            with PeakMemory(device) as peak:
                trained = train_fn(
                    run.cfg, fold, folds_path=folds_path, out_dir=out, metrics_path=metrics_path,
                    live_dir=Path(live_dir) / run.label / f"fold{fold}", progress=progress,
                    **budget,
                )
            if "peak_memory_mib" not in trained and peak.peak_mib is not None:
                # the training metrics carry no memory figure: add the one measured here
                write_json(metrics_path, {**trained, "peak_memory_mib": peak.peak_mib})
        ckpts = [checkpoints_dir / run.label / f"fold{k}" / "best.pt" for k in folds]
        summary = evaluate_fn(run.cfg, ckpts, folds_path=folds_path,
                              report_dir=Path(out_dir) / run.label, progress=progress)
        if summary.get("images_per_s") is None and speed_images > 1:
            images = _val_images(run.cfg, folds_path, folds[0], speed_images)
            summary["images_per_s"] = measure_inference(ckpts[0], images, run.cfg)
        write_json(label_dir / "cv.json", summary)
        row = read_label(label_dir, count_params(run.cfg), folds=folds)
        rows.append({**row, "settings": list(run.settings), "model_config": run.model_config})
    rows = sort_rows(rows)
    write_reports(rows, out_dir, command)
    return rows


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def finished(cfg: Config, metrics_path: Path, checkpoint: Path) -> dict | None:
    """The training metrics of a (run, fold) already trained with exactly ``cfg``, else None:
    what lets an interrupted benchmark resume without retraining the finished folds."""
    if not (metrics_path.is_file() and checkpoint.is_file()):
        return None
    from pipeline.models.checkpoint import load_checkpoint

    try:
        same = load_checkpoint(checkpoint).get("config") == to_dict(cfg)
    except PipelineError:
        return None
    return _read_json(metrics_path) if same else None


def _mean(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(nums) if nums else None


def summarize_run(label: str, per_fold: Sequence[dict], *, params: int | None = None,
                  settings: Sequence[str] = (), model_config: str = "") -> dict:
    """One table row from per-fold records (keys as built in :func:`compare`).

    CV Dice is the full-resolution TTA Dice where every fold has one, else the training-time
    validation Dice (``dice_source`` says which). The std is the sample std over folds (0 for
    one fold).
    """
    full = [f.get("dice") for f in per_fold]
    if per_fold and all(isinstance(d, (int, float)) for d in full):
        dice, source = [float(d) for d in full], "full-res TTA"
    else:
        dice = [float(f["val_dice"]) for f in per_fold
                if isinstance(f.get("val_dice"), (int, float))]
        source = "train-res val" if dice else "none"
    peaks = [f.get("peak_memory_mib") for f in per_fold if f.get("peak_memory_mib") is not None]
    devices = sorted({str(f["device"]) for f in per_fold if f.get("device")})
    return {
        "label": label,
        "settings": list(settings),
        "model_config": model_config,
        "folds": [f.get("fold") for f in per_fold],
        "dice_per_fold": dice,
        "dice_mean": statistics.fmean(dice) if dice else None,
        "dice_std": statistics.stdev(dice) if len(dice) > 1 else (0.0 if dice else None),
        "dice_source": source,
        "params": params,
        "train_images_per_s": _mean([f.get("train_images_per_s") for f in per_fold]),
        "infer_images_per_s": _mean([f.get("infer_images_per_s") for f in per_fold]),
        "peak_memory_mib": max(peaks) if peaks else None,
        "epochs": _mean([f.get("epochs") for f in per_fold]),
        "train_seconds": _mean([f.get("train_seconds") for f in per_fold]),
        "device": ", ".join(devices),
    }


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Best CV Dice first; rows without a Dice last, by label."""
    return sorted(rows, key=lambda r: (r["dice_mean"] is None, -(r["dice_mean"] or 0), r["label"]))


# --------------------------------------------------------------------------- reading metrics


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable metrics JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a JSON object")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("mean", value.get("dice"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def cv_fold_dice(cv: dict) -> dict[int, float]:
    """Per-fold full-resolution Dice from a ``cv.json``: a ``folds``/``per_fold`` entry that is
    a list of ``{"fold": k, "dice": d}`` or a mapping ``{"k": d or {"dice": d}}``."""
    entry = cv.get("folds", cv.get("per_fold"))
    out: dict[int, float] = {}
    if isinstance(entry, list):
        for item in entry:
            if isinstance(item, dict) and "fold" in item:
                value = _number(item.get("dice", item.get("val_dice")))
                if value is not None:
                    out[int(item["fold"])] = value
    elif isinstance(entry, dict):
        for key, item in entry.items():
            value = _number(item)
            if value is not None and str(key).lstrip("-").isdigit():
                out[int(key)] = value
    return out


def read_label(label_dir: Path, params: int | None = None,
               folds: Sequence[int] | None = None) -> dict | None:
    """The table row of one ``metrics/<label>/`` folder (None if it holds no metrics); only
    ``folds`` when given."""
    fold_files = {
        int(m[1]): p for p in label_dir.glob("fold*.json") if (m := FOLD_RE.match(p.name))
    }
    if folds is not None:
        fold_files = {k: p for k, p in fold_files.items() if k in folds}
    cv_path = label_dir / "cv.json"
    cv = _read_json(cv_path) if cv_path.is_file() else {}
    if not fold_files and not cv:
        return None
    trained = {k: _read_json(p) for k, p in sorted(fold_files.items())}
    full = cv_fold_dice(cv)
    if folds is not None:
        full = {k: d for k, d in full.items() if k in folds}
    per_fold = []
    for k in sorted(set(trained) | set(full)):
        t = trained.get(k, {})
        per_fold.append({
            "fold": k,
            "dice": full.get(k),
            "val_dice": t.get("val_dice"),
            "train_images_per_s": t.get("images_per_s"),
            "infer_images_per_s": None,
            "peak_memory_mib": t.get("peak_memory_mib"),
            "epochs": t.get("epochs"),
            "train_seconds": t.get("seconds"),
            "device": t.get("device"),
        })
    if not per_fold:  # a cv.json with only a mean
        mean = next((v for k in CV_KEYS if (v := _number(cv.get(k))) is not None), None)
        per_fold = [{"fold": None, "dice": mean}] if mean is not None else []
    label = next((str(t["model"]) for t in trained.values() if t.get("model")), label_dir.name)
    row = summarize_run(label, per_fold, params=params or cv.get("params"))
    if not per_fold or per_fold[0]["fold"] is None:
        row["dice_std"] = _number(cv.get("std", cv.get("dice_std")))
        row["folds"] = []
    infer = _number(cv.get("images_per_s", cv.get("infer_images_per_s")))
    row["infer_images_per_s"] = infer
    return row


def _params_from_checkpoint(checkpoints_dir: Path, label: str) -> int | None:
    """Parameters of the model in ``<checkpoints>/<label>/fold*/best.pt``, if there is one."""
    paths = sorted((checkpoints_dir / label).glob("fold*/best.pt"))
    if not paths:
        return None
    from pipeline.config import ModelConfig, from_dict
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.models.factory import build_model, count_parameters

    ckpt = load_checkpoint(paths[0])
    return count_parameters(build_model(from_dict(ModelConfig, ckpt["model_config"])))


def collect_rows(
    metrics_dir: str | Path = "metrics",
    checkpoints_dir: str | Path | None = "checkpoints",
    labels: Sequence[str] = (),
) -> list[dict]:
    """Table rows for every ``metrics/<label>/`` folder (or only ``labels``), best first."""
    metrics_dir = Path(metrics_dir)
    if not metrics_dir.is_dir():
        raise PipelineError(
            f"{metrics_dir}: metrics folder not found; run the train and evaluate stages (or "
            "`python -m pipeline.benchmark run`) first"
        )
    dirs = [metrics_dir / lab for lab in labels] if labels else sorted(metrics_dir.iterdir())
    rows = []
    for d in dirs:
        if labels and not d.is_dir():
            raise PipelineError(f"{d}: no metrics for label '{d.name}'")
        if not d.is_dir():
            continue
        params = _params_from_checkpoint(Path(checkpoints_dir), d.name) if checkpoints_dir else None
        row = read_label(d, params)
        if row is not None:
            rows.append(row)
    if not rows:
        raise PipelineError(
            f"{metrics_dir}: no metrics/<label>/fold<K>.json or cv.json found; train first"
        )
    return sort_rows(rows)


# --------------------------------------------------------------------------- reports


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value / scale, spec)


def format_markdown(rows: Sequence[dict], command: str = "") -> str:
    """The comparison as Markdown: one row per run, best CV Dice first."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Model comparison", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += [
        (f"Generated {when}. CV Dice: mean ± std over the folds listed; `full-res TTA` is the "
        "out-of-fold Dice of the best checkpoint at the photos' full size with flip TTA "
        "(pipeline.evaluate), "
        "`train-res val` the training-time validation Dice at the training size. Peak MiB: "
        "the CUDA allocator's peak on a GPU, else the process's peak resident memory while "
        "training. Speeds and memory hold for the device named only."),
        "",
        ("| # | model | CV Dice | std | Dice from | folds | params (M) | train img/s "
        "| infer img/s | peak MiB | epochs | device |"),
        "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(rows, start=1):
        folds = ",".join(str(f) for f in r["folds"]) or "-"
        lines.append(
            f"| {i} | {r['label']} | {_fmt(r['dice_mean'], '.5f')} | {_fmt(r['dice_std'], '.5f')} "
            f"| {r['dice_source']} | {folds} | {_fmt(r['params'], '.2f', 1e6)} "
            f"| {_fmt(r['train_images_per_s'], '.2f')} | {_fmt(r['infer_images_per_s'], '.2f')} "
            f"| {_fmt(r['peak_memory_mib'], '.0f')} | {_fmt(r['epochs'], '.1f')} "
            f"| {r['device'] or '-'} |"
        )
    settings = [r for r in rows if r.get("settings")]
    if settings:
        lines += ["", "Grid settings: " + "; ".join(
            f"`{r['label']}`: {' '.join(r['settings'])}" for r in settings)]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str | Path) -> Path:
    """Scatter of CV Dice (error bar: std over folds) against inference images/s, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    shown = [r for r in rows if r["dice_mean"] is not None and r["infer_images_per_s"]]
    for r in shown:
        ax.errorbar(r["infer_images_per_s"], r["dice_mean"], yerr=r["dice_std"] or 0, fmt="o",
                    capsize=3)
        ax.annotate(r["label"], (r["infer_images_per_s"], r["dice_mean"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    if shown:
        speeds = [r["infer_images_per_s"] for r in shown]
        if max(speeds) / min(speeds) > 10:
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no run has both a CV Dice and an inference speed yet",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("inference images/s (full resolution, with TTA)")
    ax.set_ylabel("CV Dice")
    ax.set_title("Dice against speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_reports(rows: Sequence[dict], out_dir: str | Path, command: str = "") -> list[Path]:
    """``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return [
        write_text(out_dir / "benchmark.md", format_markdown(rows, command)),
        write_json(out_dir / "benchmark.json", {"command": command, "rows": list(rows)}),
        plot(rows, out_dir / "benchmark.png"),
    ]


def command_line(sub: str) -> str:
    """The command as typed (``python -m pipeline.benchmark run ...``); from Python (tests,
    notebooks) only the sub-command ``sub`` is known."""
    argv0 = Path(sys.argv[0])
    is_cli = argv0.name == "__main__.py" and argv0.parent.name == "benchmark"
    args = sys.argv[1:] if is_cli else [sub]
    return "python -m pipeline.benchmark " + " ".join(shlex.quote(a) for a in args)


# --------------------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``table`` to the ``python -m pipeline.benchmark`` app."""

    @app.command("run")
    @one_line_errors
    def run_cmd(
        config: ConfigOption = None,
        model: Annotated[list[str] | None, typer.Option(
            "--model", "-m", help="Model YAML(s) (default: benchmark.models).")] = None,
        fold: Annotated[list[int] | None, typer.Option(
            help="Fold(s) to train and evaluate (default: benchmark.folds).")] = None,
        grid: Annotated[list[str] | None, typer.Option(
            help="section.key=v1,v2: one run per combination, e.g. train.lr=1e-3,3e-4.")] = None,
        folds: Annotated[Path, typer.Option(help="Folds CSV.")] = Path("folds/folds.csv"),
        metrics: Annotated[Path, typer.Option(help="Metrics root.")] = Path("metrics"),
        checkpoints: Annotated[Path, typer.Option(help="Checkpoint root.")] = Path("checkpoints"),
        live: Annotated[Path, typer.Option(help="DVCLive root.")] = Path("dvclive"),
        out_dir: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("reports"),
        rerun: Annotated[bool, typer.Option(
            help="Retrain folds already trained with the same settings.")] = False,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        overrides: OverridesArgument = None,
    ) -> None:
        """Train and evaluate every model config on the same folds and budget; write the table."""
        paths = [str(p) for p in config] if config else default_paths()
        cfg = load_config(paths, overrides or [])
        models = model or [model_path(m) for m in cfg.benchmark.models]
        runs = build_runs(paths, models, overrides or [], grid or [])
        rows = compare(
            runs, fold or cfg.benchmark.folds, time_budget_min=cfg.benchmark.time_budget_min,
            folds_path=folds, metrics_dir=metrics, checkpoints_dir=checkpoints, live_dir=live,
            out_dir=out_dir, command=command_line("run"), rerun=rerun, progress=progress,
        )
        typer.echo(f"wrote {out_dir}/benchmark.md, .json, .png: {len(rows)} run(s)")

    @app.command("table")
    @one_line_errors
    def table_cmd(
        metrics: Annotated[Path, typer.Option(help="Metrics root.")] = Path("metrics"),
        checkpoints: Annotated[Path, typer.Option(
            help="Checkpoint root (for parameter counts).")] = Path("checkpoints"),
        label: Annotated[list[str] | None, typer.Option(
            help="Only these labels (default: every metrics/<label>/).")] = None,
        out_dir: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("reports"),
    ) -> None:
        """Rebuild the table and plot from existing metrics files (no training)."""
        rows = collect_rows(metrics, checkpoints, label or [])
        write_reports(rows, out_dir, command_line("table"))
        typer.echo(f"wrote {out_dir}/benchmark.md, .json, .png: {len(rows)} model(s)")
