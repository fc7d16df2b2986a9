"""The evaluation report: per-image CSV, a Dice histogram, Dice per angle, and the worst images
drawn with the true outline in green and the predicted one in red."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline import rle
from pipeline.atomic import atomic_path
from pipeline.data.io import read_image, read_mask
from pipeline.evaluate.oof import EvalResult
from pipeline.evaluate.score import Worst
from pipeline.figures import pyplot, save_figure

TRUTH = (40, 220, 40)  # RGB outline of the true mask
PRED = (255, 40, 40)  # RGB outline of the predicted mask


def write_report(result: EvalResult, report_dir: str | Path, mode: str = "oof") -> list[Path]:
    """The per-image CSV and the PNGs of ``result`` in ``report_dir``; returns the files written.
    (The summary itself is the stage's metrics JSON.)"""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / ("oof_dice.csv" if mode == "oof" else "dice.csv")
    with atomic_path(csv_path) as tmp:
        result.scores.to_csv(tmp, index=False, float_format="%.6f")
    written = [csv_path, plot_histogram(result.scores, report_dir / "dice_hist.png"),
               plot_by_angle(result.scores, report_dir / "dice_by_angle.png")]
    for old in report_dir.glob("worst_*.png"):  # a previous run's worst images
        old.unlink()
    for rank, w in enumerate(result.worst, start=1):
        path = report_dir / f"worst_{rank:02d}_{Path(w.img).stem}.png"
        written.append(plot_worst(w, path))
    return written


def plot_histogram(scores, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores["dice"], bins=50, color="#4477aa")
    ax.set_yscale("log")
    ax.axvline(scores["dice"].mean(), color="#cc3311", label=f"mean {scores['dice'].mean():.4f}")
    ax.set_xlabel("per-image Dice")
    ax.set_ylabel("images")
    ax.set_title(f"Dice of {len(scores)} images")
    ax.legend()
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def plot_by_angle(scores, path: Path) -> Path:
    plt = pyplot()
    stats = scores.groupby("angle")["dice"].agg(["mean", "std", "size"]).sort_index()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([f"{int(a):02d}" for a in stats.index], stats["mean"],
           yerr=stats["std"].fillna(0), color="#4477aa", capsize=2)
    low = float((stats["mean"] - stats["std"].fillna(0)).min())
    ax.set_ylim(max(0.0, min(low, float(stats["mean"].min())) - 0.01), 1.0)
    ax.set_xlabel("angle")
    ax.set_ylabel("mean Dice (bar: std)")
    ax.set_title("Dice per angle")
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def overlay_outlines(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB copy of ``image`` with the true mask outlined in green and the predicted in red."""
    out = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for mask, colour in ((truth, TRUTH), (pred, PRED)):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def plot_worst(w: Worst, path: Path) -> Path:
    plt = pyplot()
    image = read_image(w.image_path)
    truth = read_mask(w.mask_path)
    pred = rle.decode(w.pred_rle, truth.shape)
    fig, ax = plt.subplots(figsize=(9.6, 9.6 * image.shape[0] / image.shape[1] + 0.5))
    ax.imshow(overlay_outlines(image, truth, pred))
    ax.set_title(f"{w.img}: Dice {w.dice:.4f} (green: truth, red: prediction)")
    ax.axis("off")
    return save_figure(fig, path, dpi=100, bbox_inches="tight")
