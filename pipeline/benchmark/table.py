"""``python -m pipeline.benchmark table``: the model comparison, built from the records alone.

    <metrics>/<label>/fold<K>.json   TrainRecord (pipeline.train): train speed, memory, epochs
    <metrics>/<label>/cv.json        CVSummary (pipeline.evaluate): full-resolution TTA Dice

The runs themselves are DVC's job: the ``train`` stage's model x fold matrix trains every model
of ``repro.models`` on every fold of ``repro.folds`` with the same settings (and, with
``train.time_budget_min``, the same wall time), and ``dvc exp run --queue`` sweeps a grid (see
the README). This table is the ``benchmark`` stage that follows. Outputs, each written
atomically: ``benchmark.md`` (sorted by CV Dice, with the command that made it),
``benchmark.json`` and ``benchmark.png`` (CV Dice against inference images/s).
"""

from __future__ import annotations

import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.atomic import write_json, write_text
from pipeline.errors import PipelineError, one_line_errors
from pipeline.figures import pyplot, save_figure
from pipeline.models.checkpoint import load_checkpoint, model_skeleton
from pipeline.models.factory import count_parameters
from pipeline.records import CVSummary, TrainRecord, read_record
from pipeline.runs import ModelPaths, Roots


def _mean(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return statistics.fmean(nums) if nums else None


def model_row(label: str, trained: dict[int, TrainRecord], cv: CVSummary | None) -> dict:
    """One table row from a model's training records and its CV summary.

    CV Dice is the full-resolution TTA Dice where the summary scores every trained fold, else
    the training-time validation Dice (``dice_source`` says which). The std is the sample std
    over folds (0 for one fold).
    """
    full = cv.fold_dice() if cv is not None else {}
    folds = sorted(set(trained) | set(full))
    if folds and all(k in full for k in folds):
        dice, source = [full[k] for k in folds], "full-res TTA"
    else:
        dice = [trained[k].val_dice for k in folds
                if k in trained and trained[k].val_dice is not None]
        source = "train-res val" if dice else "none"
    records = list(trained.values())
    peaks = [r.peak_memory_mib for r in records if r.peak_memory_mib is not None]
    params = next((r.params for r in records if r.params is not None), None)
    return {
        "label": next((r.model for r in records), label),
        "folds": folds,
        "dice_per_fold": dice,
        "dice_mean": statistics.fmean(dice) if dice else None,
        "dice_std": statistics.stdev(dice) if len(dice) > 1 else (0.0 if dice else None),
        "dice_source": source,
        "params": params,
        "train_images_per_s": _mean([r.images_per_s for r in records]),
        "infer_images_per_s": cv.images_per_s if cv is not None else None,
        "peak_memory_mib": max(peaks) if peaks else None,
        "epochs": _mean([r.epochs_trained for r in records]),
        "train_seconds": _mean([r.seconds for r in records]),
        "device": ", ".join(sorted({r.device for r in records})),
    }


def collect_rows(roots: Roots, labels: Sequence[str] = ()) -> list[dict]:
    """Table rows for every ``<metrics>/<label>/`` folder (or only ``labels``), best first."""
    if not roots.metrics.is_dir():
        raise PipelineError(
            f"{roots.metrics}: metrics folder not found; run the train and evaluate stages "
            "(dvc repro) first"
        )
    names = list(labels) or sorted(d.name for d in roots.metrics.iterdir() if d.is_dir())
    rows = []
    for label in names:
        paths = roots.model(label)
        if labels and not (roots.metrics / label).is_dir():
            raise PipelineError(f"{roots.metrics / label}: no metrics for label '{label}'")
        trained = {k: read_record(p, TrainRecord)
                   for k, p in paths.training_records().items() if k >= 0}
        cv = read_record(paths.cv_summary, CVSummary) if paths.cv_summary.is_file() else None
        if trained or cv is not None:
            row = model_row(label, trained, cv)
            if row["params"] is None:  # a record written before they carried the count
                row["params"] = _checkpoint_params(paths)
            rows.append(row)
    if not rows:
        raise PipelineError(
            f"{roots.metrics}: no metrics/<label>/fold<K>.json or cv.json found; train first"
        )
    return sort_rows(rows)


def _checkpoint_params(paths: ModelPaths) -> int | None:
    """Parameters of the model in a ``best.pt`` of ``paths``, if there is one."""
    found = list(paths.fold_checkpoints().values())
    if not found:
        return None
    return count_parameters(model_skeleton(load_checkpoint(found[0]), found[0]))


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Best CV Dice first; rows without a Dice last, by label."""
    return sorted(rows, key=lambda r: (r["dice_mean"] is None, -(r["dice_mean"] or 0), r["label"]))


# --------------------------------------------------------------------------- reports


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value / scale, spec)


def table_markdown(rows: Sequence[dict], command: str = "") -> str:
    """The comparison as Markdown: one row per model, best CV Dice first."""
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
         "training. Epochs: trained epochs, a fraction where a time budget ended one early. "
         "Speeds and memory hold for the device named only."),
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
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str | Path) -> Path:
    """Scatter of CV Dice (error bar: std over folds) against inference images/s, labelled."""
    plt = pyplot()
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
    return save_figure(fig, path)


def write_table(rows: Sequence[dict], out_dir: str | Path, command: str = "") -> list[Path]:
    """``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return [
        write_text(out_dir / "benchmark.md", table_markdown(rows, command)),
        write_json(out_dir / "benchmark.json", {"command": command, "rows": list(rows)}),
        plot(rows, out_dir / "benchmark.png"),
    ]


def command_line(sub: str) -> str:
    """The command as typed (``python -m pipeline.benchmark table ...``); from Python (tests,
    notebooks) only the sub-command ``sub`` is known."""
    argv0 = Path(sys.argv[0])
    if argv0.parent.name == "benchmark" and argv0.name == f"{sub}.py":  # python -m ...<sub>
        return f"python -m pipeline.benchmark.{sub} " + " ".join(map(shlex.quote, sys.argv[1:]))
    is_cli = argv0.name == "__main__.py" and argv0.parent.name == "benchmark"
    args = sys.argv[1:] if is_cli else [sub]
    return "python -m pipeline.benchmark " + " ".join(shlex.quote(a) for a in args)


def register(app: typer.Typer) -> None:
    """Add ``table`` to the ``python -m pipeline.benchmark`` app."""

    @app.command("table")
    @one_line_errors
    def table_cmd(
        metrics: Annotated[Path, typer.Option(help="Metrics root.")] = Roots.metrics,
        checkpoints: Annotated[Path, typer.Option(
            help="Checkpoint root (parameter counts of records that lack them).")]
        = Roots.checkpoints,
        label: Annotated[list[str] | None, typer.Option(
            help="Only these labels (default: every metrics/<label>/).")] = None,
        out_dir: Annotated[Path, typer.Option(help="Where the reports go.")] = Roots.reports,
    ) -> None:
        """Build the comparison table and plot from the metrics files (no training)."""
        rows = collect_rows(Roots(metrics=metrics, checkpoints=checkpoints), label or [])
        write_table(rows, out_dir, command_line("table"))
        typer.echo(f"wrote {out_dir}/benchmark.md, .json, .png: {len(rows)} model(s)")


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])
register(app)  # ``python -m pipeline.benchmark.table``: the ``table`` subcommand on its own

if __name__ == "__main__":
    app()
