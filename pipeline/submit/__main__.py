"""Submission stage: ``python -m pipeline.submit``.

Predicts every image named in ``sample_submission.csv``, in its order, from ``test/`` with the
fold ensemble (the ``best.pt`` of every validated fold: the models the CV score measures) and
flip TTA, and streams a validated, resumable ``submissions/<name>.csv.gz``
(:mod:`pipeline.submit.make`). ``torchrun --nproc_per_node N -m pipeline.submit`` splits the
names over ranks. ``--validate FILE`` only validates a file; ``--upload`` sends the result to
Kaggle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline import distributed, kaggle
from pipeline.cli import StageOptions, stage
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import checkpoint_label
from pipeline.runs import ensemble_checkpoints
from pipeline.submit.format import validate_for_data_root
from pipeline.submit.make import make_submission

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


def _validate_only(file: Path, data_root: Path, limit: int | None) -> None:
    problems, shape = validate_for_data_root(file, data_root, limit)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise PipelineError(f"{file}: not a valid submission ({len(problems)} problem(s) above)")
    typer.echo(f"{file}: valid ({shape[1]}x{shape[0]} masks, names and order of "
               f"{Path(data_root) / 'sample_submission.csv'})")


@stage(app, "config", "model", "data_root", "checkpoints", "device", "progress", "overrides")
def main(
    opts: StageOptions,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="A checkpoint of the ensemble (repeatable); default: the best.pt of every "
             "validated fold of the model.")] = None,
    name: Annotated[str | None, typer.Option(help="File name stem (default: submit.name).")]
    = None,
    out_dir: Annotated[Path, typer.Option(help="Where <name>.csv.gz is written.")]
    = Path("submissions"),
    validate: Annotated[Path | None, typer.Option(
        help="Only validate this submission file against sample_submission.csv, then exit.")]
    = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images (smoke runs).")]
    = None,
    upload_: Annotated[bool, typer.Option("--upload", help="Send the file to Kaggle.")] = False,
    message: Annotated[str, typer.Option(help="Kaggle submission message.")] = "",
) -> None:
    """Predict the test set with the fold ensemble and write a validated submission."""
    cfg = opts.cfg()
    root = Path(cfg.data.root)
    if validate is not None:
        _validate_only(validate, root, limit)
        return
    ckpts = ensemble_checkpoints(checkpoint, opts.roots.model(cfg.model.label))
    label = checkpoint_label(ckpts[0]) if checkpoint and not opts.model else cfg.model.label
    out = out_dir / f"{name or cfg.submit.name}.csv.gz"
    dist = distributed.setup(opts.device)
    try:
        result = make_submission(cfg.predict, cfg.submit, ckpts, root, out, limit=limit,
                                 dist=dist, progress=opts.progress)
    finally:
        distributed.cleanup(dist)
    if not dist.is_main:
        return
    rate = result.predicted / result.seconds if result.seconds else 0.0
    typer.echo(f"wrote {out}: {result.rows} rows, {len(ckpts)} model(s), tta={cfg.predict.tta}, "
               f"{result.predicted} predicted here at {rate:.2f} img/s"
               + (f", {result.resumed_rows} resumed" if result.resumed_rows else ""))
    if upload_:
        kaggle.submit_file(out, message or f"{label} x{len(ckpts)} "
                                           f"tta={'+'.join(cfg.predict.tta) or 'none'}")
        typer.echo(f"uploaded {out} to {kaggle.COMPETITION}")


if __name__ == "__main__":
    app()
