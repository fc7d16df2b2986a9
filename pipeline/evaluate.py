"""Evaluation stage: ``python -m pipeline.evaluate``.

Out-of-fold (default): for every fold K with a checkpoint ``<checkpoints>/<label>/fold<K>/
best.pt``, the fold's validation images (``folds/folds.csv``) are predicted at their full size
by that fold's model with flip TTA (:mod:`pipeline.predict`) and scored with the per-image Dice
of :mod:`pipeline.metrics`. ``--all-images``: the given checkpoints (``--checkpoint``,
repeatable: one ensemble) or every fold's model, on every labelled image of a Kaggle-layout
folder, e.g. held-out cars.

Outputs (``<out-dir>/<label>/``, ``<out-dir>/<label>/<folder name>/`` for ``--all-images``):

    oof_dice.csv (dice.csv)   one row per image: img, car_id, angle, make, fold, dice, pixels
    cv.json (summary.json)    mean, std, per fold, per angle 01..16, per make, settings
    dice_hist.png             histogram of per-image Dice
    dice_by_angle.png         mean Dice per angle
    worst_NN_<img>.png        the worst images: photo, true outline green, predicted red

plus the summary again at ``--metrics-out`` (default ``metrics/<label>/cv.json``) for DVC.

Finished folds are kept in ``.fold<K>.csv`` beside the report, stamped with a fingerprint of
the checkpoint, settings and images, so an interrupted run resumes at the next fold.
``torchrun --nproc_per_node N -m pipeline.evaluate`` splits each fold's images over ranks.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import torch
import typer

from pipeline import rle
from pipeline.atomic import atomic_path, write_json
from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import (
    Config,
    PredictConfig,
    cli_config,
)
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError, one_line_errors
from pipeline.metrics import dice_per_image
from pipeline.predict import (
    fingerprint,
    fold_checkpoints,
    image_shape,
    iter_predictions,
    load_ensemble,
    pick_device,
    to_masks,
)
from pipeline.training.distributed import DistInfo

COLUMNS = ["img", "car_id", "angle", "make", "fold", "dice", "pred_px", "true_px", "inter_px"]
TRUTH = (40, 220, 40)  # RGB outline of the true mask
PRED = (255, 40, 40)  # RGB outline of the predicted mask


# --------------------------------------------------------------------------- scoring


@dataclass(order=True)
class Worst:
    """A badly predicted image, kept with its predicted mask as RLE (a few kB)."""

    dice: float
    img: str = field(compare=False)
    image_path: str = field(compare=False)
    mask_path: str = field(compare=False)
    pred_rle: str = field(compare=False)


def score_images(
    ensemble,
    rows: pd.DataFrame,
    cfg: PredictConfig,
    device: torch.device,
    out_shape: tuple[int, int],
    worst_k: int = 6,
    progress: bool | str = False,
) -> tuple[pd.DataFrame, list[Worst]]:
    """Predict ``rows`` (img, image_path, mask_path, car_id, angle, make[, fold]) and score
    each image against its mask at full size.

    Returns one row per image (COLUMNS) and the ``worst_k`` lowest-Dice images, worst first.
    Only Dice values and pixel counts are kept per image, so memory does not grow with the set.
    """
    heap: list[tuple[float, int, Worst]] = []  # max-heap on Dice via negation: the k worst
    scored = []
    preds = iter_predictions(ensemble, rows["image_path"].tolist(), cfg, device, out_shape,
                             mask_paths=rows["mask_path"].tolist(), progress=progress)
    for pred in preds:
        masks = to_masks(pred.probs, cfg.threshold, cfg.largest_component)
        truth = pred.masks.bool()
        dice = dice_per_image(masks, truth).double().cpu().numpy()
        counts = torch.stack([masks.flatten(1).sum(1), truth.flatten(1).sum(1),
                              (masks & truth).flatten(1).sum(1)], 1).cpu().numpy()
        for j, i in enumerate(pred.indices):
            scored.append((i, float(dice[j]), *map(int, counts[j])))
            entry = (-float(dice[j]), i)
            if len(heap) < worst_k or entry > heap[0][:2]:
                row = rows.iloc[i]
                worst = Worst(float(dice[j]), row["img"], row["image_path"], row["mask_path"],
                              rle.encode_torch(masks[j : j + 1])[0])
                item = (entry[0], entry[1], worst)
                if len(heap) < worst_k:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)
    order = [s[0] for s in scored]
    out = rows.iloc[order].reset_index(drop=True)
    if "fold" not in out:
        out["fold"] = -1
    values = np.array([s[1:] for s in scored], dtype=np.float64).reshape(-1, 4)
    out["dice"] = values[:, 0]
    for k, col in enumerate(("pred_px", "true_px", "inter_px"), start=1):
        out[col] = values[:, k].astype(np.int64)
    return out[COLUMNS], sorted(w for _, _, w in heap)


def summarize_dice(scores: pd.DataFrame) -> dict:
    """Mean/std/min/median Dice over images, pixel precision and recall, and the mean Dice
    per fold, per angle (``"01"``..``"16"``) and per make."""
    d = scores["dice"]
    pred, true, inter = (float(scores[c].sum()) for c in ("pred_px", "true_px", "inter_px"))

    def by(col: str, key=str) -> dict:
        groups = scores.groupby(col)["dice"]
        return {key(k): {"dice": float(g.mean()), "std": float(g.std(ddof=0)), "images": len(g)}
                for k, g in groups}

    return {
        "images": len(scores),
        "dice": float(d.mean()),
        "dice_std": float(d.std(ddof=0)),
        "dice_min": float(d.min()),
        "dice_median": float(d.median()),
        "precision": inter / pred if pred else 1.0,
        "recall": inter / true if true else 1.0,
        "folds": by("fold", lambda k: str(int(k))),
        "angles": by("angle", lambda k: f"{int(k):02d}"),
        "makes": by("make"),
    }


# --------------------------------------------------------------------------- data


def labelled_index(data_root: str | Path) -> pd.DataFrame:
    """Every image of ``<data_root>/train`` that has a mask (train_index rows)."""
    index = train_index(data_root)
    labelled = index[index["mask_path"] != ""].reset_index(drop=True)
    if labelled.empty:
        raise PipelineError(f"{Path(data_root) / 'train_masks'}: no masks for the images in "
                            f"{Path(data_root) / 'train'}; evaluation needs labelled images")
    return labelled


def fold_rows(
    index: pd.DataFrame, folds: pd.DataFrame, fold: int, folds_path: Path
) -> pd.DataFrame:
    """Index rows of fold ``fold``'s validation images, with their fold number."""
    from pipeline.folds import select_rows, split

    _, val = split(folds, fold)
    return select_rows(index, val, folds_path, "the data root (train/, train_masks/)").assign(fold=fold)


def _fold_of(path: Path) -> int:
    name = path.parent.name
    if name.startswith("fold"):
        try:
            return int(name[4:])
        except ValueError:
            pass
    raise PipelineError(
        f"{path}: cannot tell which fold it validates (its folder is not fold<K>); "
        "use --all-images to score it on a whole labelled folder"
    )


# --------------------------------------------------------------------------- distribution


def _my_block(rows: pd.DataFrame, dist: DistInfo, align: int) -> pd.DataFrame:
    from pipeline.submit import block_range

    start, stop = block_range(len(rows), dist.rank, dist.world_size, align)
    return rows.iloc[start:stop]


def _gather(obj, dist: DistInfo) -> list:
    """Every rank's ``obj`` on every rank, in rank order (just ``[obj]`` on one process)."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out: list = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def score_distributed(ensemble, rows, cfg: PredictConfig, dist: DistInfo, device, out_shape,
                      worst_k: int, progress) -> tuple[pd.DataFrame, list[Worst]]:
    """:func:`score_images` with the rows split over ranks; every rank gets the whole result."""
    mine = _my_block(rows, dist, cfg.batch_size)
    scores, worst = score_images(ensemble, mine.reset_index(drop=True), cfg, device, out_shape,
                                 worst_k, progress if dist.is_main else False)
    parts = _gather((scores, worst), dist)
    scores = pd.concat([p[0] for p in parts], ignore_index=True)
    worst = sorted(w for p in parts for w in p[1])[:worst_k]
    return scores, worst


# --------------------------------------------------------------------------- the two modes


@dataclass
class EvalResult:
    scores: pd.DataFrame
    worst: list[Worst]
    summary: dict


def _fold_cache(report_dir: Path, fold: int) -> tuple[Path, Path]:
    path = report_dir / f".fold{fold}.csv"
    return path, path.with_suffix(".json")


def _load_cached(report_dir: Path, fold: int, key: str) -> tuple[pd.DataFrame, list[Worst]] | None:
    path, stamp = _fold_cache(report_dir, fold)
    try:
        state = json.loads(stamp.read_text())
        if state.get("key") != key:
            return None
        scores = pd.read_csv(path, dtype={"img": str, "car_id": str, "make": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    worst = [Worst(**w) for w in state.get("worst", [])]
    return scores[COLUMNS], worst


def _save_cached(report_dir: Path, fold: int, key: str, scores: pd.DataFrame,
                 worst: list[Worst]) -> None:
    path, stamp = _fold_cache(report_dir, fold)
    with atomic_path(path) as tmp:
        scores.to_csv(tmp, index=False)
    write_json(stamp, {"key": key, "worst": [vars(w) for w in worst]})


def evaluate_oof(
    cfg: Config,
    data_root: str | Path,
    folds_path: str | Path,
    report_dir: str | Path,
    *,
    checkpoints_dir: str | Path = "checkpoints",
    checkpoints: Sequence[str | Path] | None = None,
    worst_k: int = 6,
    device: torch.device | str | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """Out-of-fold Dice: each fold's validation images scored by that fold's model.

    ``checkpoints``: explicit files, each in a ``fold<K>`` folder; default: every
    ``<checkpoints_dir>/<label>/fold<K>/best.pt``. Folds without a checkpoint are skipped.
    """
    from pipeline.folds import load_folds

    dist, device = _place(dist, device)
    report_dir = Path(report_dir)
    folds_path = Path(folds_path)
    folds = load_folds(folds_path)
    if checkpoints:
        by_fold = {_fold_of(Path(p)): Path(p) for p in checkpoints}
    else:
        by_fold = fold_checkpoints(checkpoints_dir, cfg.model.label)
    by_fold = {k: p for k, p in by_fold.items() if k >= 0}
    n_folds = int(folds["fold"].max()) + 1
    if not by_fold:
        raise PipelineError(
            f"no fold checkpoints at {Path(checkpoints_dir) / cfg.model.label}/fold<K>/best.pt "
            f"for the {n_folds} folds of {folds_path}; train them first (python -m pipeline.train "
            "--fold K) or pass --checkpoint"
        )
    index = labelled_index(data_root)
    out_shape = image_shape(index["image_path"].iloc[0])
    all_scores, all_worst = [], []
    p = cfg.predict
    predicted, seconds = 0, 0.0  # full-resolution TTA throughput, for the benchmark table
    for fold, ckpt in by_fold.items():
        rows = fold_rows(index, folds, fold, folds_path)
        if rows.empty:
            continue
        key = fingerprint([ckpt], (p.tta, p.threshold, p.largest_component, p.precision),
                          out_shape,
                          rows["img"].tolist())
        cached = _load_cached(report_dir, fold, key)
        if cached is None:
            ensemble = load_ensemble([ckpt], device, p)
            start = time.perf_counter()
            scores, worst = score_distributed(ensemble, rows, p, dist, device, out_shape,
                                              worst_k, f"fold {fold}" if progress else False)
            predicted, seconds = predicted + len(rows), seconds + time.perf_counter() - start
            if dist.is_main:
                _save_cached(report_dir, fold, key, scores, worst)
        else:
            scores, worst = cached
        all_scores.append(scores)
        all_worst.extend(worst)
    scores = pd.concat(all_scores, ignore_index=True).sort_values("img", ignore_index=True)
    summary = {"mode": "oof", "label": cfg.model.label, "data_root": str(data_root),
               "folds_file": str(folds_path), **summarize_dice(scores),
               "checkpoints": {str(k): str(v) for k, v in by_fold.items()},
               "skipped_folds": [k for k in range(n_folds) if k not in by_fold],
               "images_per_s": predicted / seconds if seconds else None,
               **_settings(p, device)}
    return EvalResult(scores, sorted(all_worst)[:worst_k], summary)


def evaluate_all_images(
    cfg: Config,
    data_root: str | Path,
    checkpoints: Sequence[str | Path],
    *,
    worst_k: int = 6,
    device: torch.device | str | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """The ensemble of ``checkpoints`` on every labelled image of ``data_root``."""
    dist, device = _place(dist, device)
    index = labelled_index(data_root)
    out_shape = image_shape(index["image_path"].iloc[0])
    ensemble = load_ensemble(checkpoints, device, cfg.predict)
    scores, worst = score_distributed(ensemble, index, cfg.predict, dist, device, out_shape,
                                      worst_k, "evaluate" if progress else False)
    scores = scores.sort_values("img", ignore_index=True)
    summary = {"mode": "all-images", "label": cfg.model.label, "data_root": str(data_root),
               **summarize_dice(scores), "checkpoints": [str(c) for c in checkpoints],
               **_settings(cfg.predict, device)}
    return EvalResult(scores, worst, summary)


def _place(dist: DistInfo | None, device) -> tuple[DistInfo, torch.device]:
    if dist is None:
        dist = DistInfo(device=pick_device(None if device is None else str(device)))
    return dist, torch.device(device) if device is not None else dist.device


def _settings(p: PredictConfig, device: torch.device) -> dict:
    from pipeline.predict import resolve_dtype

    dtype = resolve_dtype(p.precision, device)
    return {"predict": {"tta": list(p.tta), "threshold": p.threshold,
                        "largest_component": p.largest_component,
                        "precision": {None: "fp32", torch.bfloat16: "bf16",
                                      torch.float16: "fp16"}[dtype], "device": device.type}}


# --------------------------------------------------------------------------- the report


def write_report(result: EvalResult, report_dir: str | Path, mode: str = "oof") -> list[Path]:
    """CSV, summary JSON and PNGs of ``result`` in ``report_dir``; returns the files written."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_name, json_name = ("oof_dice.csv", "cv.json") if mode == "oof" else ("dice.csv",
                                                                             "summary.json")
    written = [report_dir / csv_name, report_dir / json_name]
    with atomic_path(written[0]) as tmp:
        result.scores.to_csv(tmp, index=False, float_format="%.6f")
    write_json(written[1], result.summary)
    written.append(plot_histogram(result.scores, report_dir / "dice_hist.png"))
    written.append(plot_by_angle(result.scores, report_dir / "dice_by_angle.png"))
    for old in report_dir.glob("worst_*.png"):  # a previous run's worst images
        old.unlink()
    for rank, w in enumerate(result.worst, start=1):
        path = report_dir / f"worst_{rank:02d}_{Path(w.img).stem}.png"
        written.append(plot_worst(w, path))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_histogram(scores: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores["dice"], bins=50, color="#4477aa")
    ax.set_yscale("log")
    ax.axvline(scores["dice"].mean(), color="#cc3311", label=f"mean {scores['dice'].mean():.4f}")
    ax.set_xlabel("per-image Dice")
    ax.set_ylabel("images")
    ax.set_title(f"Dice of {len(scores)} images")
    ax.legend()
    return _save(fig, path)


def plot_by_angle(scores: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    stats = scores.groupby("angle")["dice"].agg(["mean", "std", "size"]).sort_index()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([f"{int(a):02d}" for a in stats.index], stats["mean"],
           yerr=stats["std"].fillna(0), color="#4477aa", capsize=2)
    low = float((stats["mean"] - stats["std"].fillna(0)).min())
    ax.set_ylim(max(0.0, min(low, float(stats["mean"].min())) - 0.01), 1.0)
    ax.set_xlabel("angle")
    ax.set_ylabel("mean Dice (bar: std)")
    ax.set_title("Dice per angle")
    return _save(fig, path)


def overlay_outlines(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB copy of ``image`` with the true mask outlined in green and the predicted in red."""
    import cv2

    out = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for mask, colour in ((truth, TRUTH), (pred, PRED)):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def plot_worst(w: Worst, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from pipeline.data.io import read_image, read_mask

    image = read_image(w.image_path)
    truth = read_mask(w.mask_path)
    pred = rle.decode(w.pred_rle, truth.shape)
    fig, ax = plt.subplots(figsize=(9.6, 9.6 * image.shape[0] / image.shape[1] + 0.5))
    ax.imshow(overlay_outlines(image, truth, pred))
    ax.set_title(f"{w.img}: Dice {w.dice:.4f} (green: truth, red: prediction)")
    ax.axis("off")
    return _save(fig, path)


# --------------------------------------------------------------------------- CLI

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    checkpoints: Annotated[Path, typer.Option(help="Folder holding <label>/fold<K>/best.pt.")]
    = Path("checkpoints"),
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="Checkpoint(s) to score (repeatable). Out-of-fold: each in a fold<K> folder; "
             "--all-images: one ensemble.")] = None,
    folds: Annotated[Path, typer.Option(help="Folds CSV.")] = Path("folds/folds.csv"),
    data_root: Annotated[Path | None, typer.Option(
        help="Kaggle-layout folder with train/ and train_masks/ (default: data.root).")] = None,
    all_images: Annotated[bool, typer.Option(
        "--all-images", help="Score every labelled image of --data-root (no folds).")] = False,
    out_dir: Annotated[Path, typer.Option(help="Report folder root.")] = Path("reports"),
    metrics_out: Annotated[Path | None, typer.Option(
        help="Summary JSON for DVC (default: metrics/<label>/cv.json; with --all-images "
             "metrics/<label>/eval_<folder>.json).")] = None,
    worst: Annotated[int, typer.Option(help="Worst images drawn as overlays.")] = 6,
    device: DeviceOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Score fold models out of fold (or an ensemble on a labelled folder); write the report."""
    from pipeline.predict import checkpoint_label, resolve_checkpoints
    from pipeline.training.distributed import cleanup, setup

    cfg = cli_config(config, model, overrides)
    root = data_root or Path(cfg.data.root)
    # Reports are filed under the model's label: the one stored in a given checkpoint unless
    # --model names it.
    if checkpoint and not model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, name=checkpoint_label(checkpoint[0])))
    label = cfg.model.label
    dist = setup()
    if device and not dist.enabled:
        dist = DistInfo(device=torch.device(device))
    try:
        if all_images:
            ckpts = resolve_checkpoints(checkpoint, checkpoints, label)
            report_dir = out_dir / label / Path(root).resolve().name
            metrics_path = metrics_out or Path("metrics") / label / f"eval_{report_dir.name}.json"
            result = evaluate_all_images(cfg, root, ckpts, worst_k=worst, dist=dist)
        else:
            report_dir = out_dir / label
            metrics_path = metrics_out or Path("metrics") / label / "cv.json"
            result = evaluate_oof(cfg, root, folds, report_dir, checkpoints_dir=checkpoints,
                                  checkpoints=checkpoint, worst_k=worst, dist=dist)
        if dist.is_main:
            write_report(result, report_dir, "all" if all_images else "oof")
            write_json(metrics_path, result.summary)
    finally:
        cleanup(dist)
    if dist.is_main:
        s = result.summary
        per_fold = ", ".join(f"{k}: {v['dice']:.4f}" for k, v in s["folds"].items())
        typer.echo(f"{s['images']} images: Dice {s['dice']:.4f} +- {s['dice_std']:.4f} "
                   f"(min {s['dice_min']:.4f}; folds {per_fold})")
        typer.echo(f"wrote {report_dir}/ and {metrics_path}")


if __name__ == "__main__":
    app()
