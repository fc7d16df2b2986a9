"""Evaluation stage: ``python -m pipeline.evaluate``.

Out-of-fold (default): every fold K with a checkpoint ``<checkpoints>/<label>/fold<K>/best.pt``
scores the fold's validation images at their full size with flip TTA
(:mod:`pipeline.evaluate.oof`). ``--all-images``: the given checkpoints (``--checkpoint``,
repeatable: one ensemble) or every fold's model, on every labelled image of a Kaggle-layout
folder, e.g. held-out cars. A model that learnt from an image it would be scored on is refused.

Outputs: the report in ``<out-dir>/<label>/`` (``<out-dir>/<label>/<folder name>/`` for
``--all-images``): ``oof_dice.csv`` (``dice.csv``, one row per image), ``dice_hist.png``,
``dice_by_angle.png``, ``worst_NN_<img>.png``; and the summary
(:class:`pipeline.records.CVSummary`, the mean with its 95% bootstrap interval over cars) at
``--metrics-out`` (default ``metrics/<label>/cv.json``; ``metrics/<label>/eval_<folder>.json``
for ``--all-images``). ``torchrun --nproc_per_node N -m pipeline.evaluate`` splits each fold's
images over ranks.

``--compare BASE.csv --compare OTHER.csv ...`` only compares per-image score files already
written (``oof_dice.csv``): each other file's paired difference from the first, on the images
both scored, with its 95% bootstrap interval over cars (:mod:`pipeline.evaluate.stats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from pipeline import distributed
from pipeline.cli import StageOptions, stage
from pipeline.errors import PipelineError
from pipeline.evaluate.oof import evaluate_all_images, evaluate_oof
from pipeline.evaluate.report import write_report
from pipeline.evaluate.stats import bootstrap_ci, paired_difference
from pipeline.models.checkpoint import checkpoint_label
from pipeline.records import write_record
from pipeline.runs import ensemble_checkpoints

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


def read_scores(path: Path) -> pd.DataFrame:
    """A per-image score file (``oof_dice.csv`` or ``dice.csv``) of this stage."""
    try:
        scores = pd.read_csv(path, dtype={"img": str, "car_id": str})
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: not a readable score file ({exc})") from None
    if not {"img", "car_id", "dice"} <= set(scores.columns):
        raise PipelineError(f"{path}: not a per-image score file (needs img, car_id, dice; "
                            "python -m pipeline.evaluate writes oof_dice.csv)")
    return scores


def compare(files: list[Path]) -> None:
    """Print each file's mean Dice with its interval, and its paired difference from the
    first file."""
    if len(files) < 2:
        raise PipelineError("--compare needs at least two score files: the base, then others")
    base = read_scores(files[0])
    for path in files:
        scores = read_scores(path)
        lo, hi = bootstrap_ci(scores["dice"], scores["car_id"])
        line = (f"{path}: Dice {scores['dice'].mean():.5f} [{lo:.5f}, {hi:.5f}] "
                f"({len(scores)} images, {scores['car_id'].nunique()} cars)")
        if path != files[0]:
            d = paired_difference(base, scores)
            line += (f"; minus the base: {d.diff:+.5f} [{d.lo:+.5f}, {d.hi:+.5f}] on "
                     f"{d.images} images of {d.cars} cars ({d.better} better, {d.worse} worse)")
        typer.echo(line)


@stage(app, "config", "model", "data_root", "folds", "checkpoints", "reports", "device",
       "progress", "overrides")
def main(
    opts: StageOptions,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="Checkpoint(s) to score (repeatable). Out-of-fold: each in a fold<K> folder; "
             "--all-images: one ensemble.")] = None,
    all_images: Annotated[bool, typer.Option(
        "--all-images", help="Score every labelled image of --data-root (no folds).")] = False,
    metrics_out: Annotated[Path | None, typer.Option(
        help="Summary JSON for DVC (default: metrics/<label>/cv.json; with --all-images "
             "metrics/<label>/eval_<folder>.json).")] = None,
    worst: Annotated[int, typer.Option(help="Worst images drawn as overlays.")] = 6,
    compare_files: Annotated[list[Path] | None, typer.Option(
        "--compare", help="Only compare score files (repeatable; the first is the base).")]
    = None,
) -> None:
    """Score fold models out of fold (or an ensemble on a labelled folder); write the report."""
    if compare_files:
        compare(compare_files)
        return
    cfg = opts.cfg()
    root = Path(cfg.data.root)
    # Reports are filed under the model's label: the one stored in a given checkpoint unless
    # --model names it.
    label = checkpoint_label(checkpoint[0]) if checkpoint and not opts.model else cfg.model.label
    paths = opts.roots.model(label)
    dist = distributed.setup(opts.device)
    try:
        if all_images:
            ckpts = ensemble_checkpoints(checkpoint, paths)
            report_dir = paths.report_dir / root.resolve().name
            metrics_path = metrics_out or paths.cv_summary.with_name(
                f"eval_{report_dir.name}.json")
            result = evaluate_all_images(cfg.predict, label, root, ckpts, worst_k=worst,
                                         dist=dist, progress=opts.progress)
        else:
            report_dir = paths.report_dir
            metrics_path = metrics_out or paths.cv_summary
            result = evaluate_oof(cfg.predict, root, opts.folds, report_dir, model=paths,
                                  checkpoints=checkpoint, worst_k=worst, dist=dist,
                                  progress=opts.progress)
        if dist.is_main:
            write_report(result, report_dir, "all" if all_images else "oof")
            write_record(metrics_path, result.summary)
    finally:
        distributed.cleanup(dist)
    if dist.is_main:
        s = result.summary
        per_fold = ", ".join(f"{k}: {v.dice:.4f}" for k, v in s.folds.items())
        lo, hi = s.dice_ci95
        typer.echo(f"{s.images} images: Dice {s.dice:.4f} [95% over cars {lo:.4f}, {hi:.4f}] "
                   f"+- {s.dice_std:.4f} (min {s.dice_min:.4f}; folds {per_fold})")
        typer.echo(f"wrote {report_dir}/ and {metrics_path}")


if __name__ == "__main__":
    app()
