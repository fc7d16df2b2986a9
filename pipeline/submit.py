"""Submission stage: ``python -m pipeline.submit``.

Predicts every image named in ``sample_submission.csv``, in its order, from ``test/`` with the
fold ensemble and flip TTA, and streams ``submissions/<name>.csv.gz`` in constant memory.

- Resumable: rows are appended in gzip chunks of ``submit.shard_every`` rows to a hidden part
  file with a stamp (rows done, bytes, and a fingerprint of checkpoints + settings + names); a
  re-run with the same fingerprint continues after the last chunk, any other starts afresh.
- The final file is validated (:mod:`pipeline.submission`) and renamed into place atomically;
  on a failure the part files stay, so nothing computed is lost.
- ``torchrun --nproc_per_node N -m pipeline.submit``: rank r predicts the r-th contiguous block
  of names (blocks are whole batches, so every batch is the one a single process would run),
  writes its own shard, and rank 0 concatenates the shards in order (shards must be on a
  filesystem every rank sees).
- ``--validate FILE`` only validates a file; ``--upload`` sends the result to Kaggle.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline.atomic import atomic_path
from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import (
    FULL_HEIGHT,
    FULL_WIDTH,
    Config,
    cli_config,
)
from pipeline.data.layout import Layout, submission_names
from pipeline.errors import PipelineError, one_line_errors
from pipeline.predict import (
    checkpoint_label,
    fingerprint,
    image_shape,
    iter_predictions,
    load_ensemble,
    masks_to_rle,
    pick_device,
    resolve_checkpoints,
)
from pipeline.submission import HEADER, ShardWriter, check_submission, concat_files, csv_lines
from pipeline.training.distributed import DistInfo

COMPETITION = "carvana-image-masking-challenge"
CREDENTIALS = ("put your API token in ~/.kaggle/kaggle.json "
               "(or set KAGGLE_USERNAME and KAGGLE_KEY)")


@dataclass
class SubmitResult:
    path: Path
    rows: int  # rows in the final file
    predicted: int  # rows this process predicted in this run (0 when all were resumed)
    resumed_rows: int  # rows this process took over from an earlier run
    seconds: float
    shape: tuple[int, int]


def block_range(n: int, rank: int, world: int, align: int = 1) -> tuple[int, int]:
    """Rank ``rank``'s contiguous [start, stop) of ``n`` items; block sizes are multiples of
    ``align`` (the batch size) except the last, so batches match a single-process run."""
    per_rank = -(-n // world)  # ceil
    per_rank = -(-per_rank // align) * align
    start = min(n, rank * per_rank)
    return start, min(n, start + per_rank)


def shard_path(out: Path, rank: int, world: int) -> Path:
    """Hidden part file of ``rank`` beside the final ``out`` (``.<name>.part``)."""
    stem = out.name.removesuffix(".gz").removesuffix(".csv")
    suffix = "" if world == 1 else f".rank{rank}-of-{world}"
    return out.with_name(f".{stem}{suffix}.part")


def sample_images(
    data_root: str | Path, limit: int | None = None
) -> tuple[list[str], list[Path]]:
    """(names in sample_submission order, their paths in test/); all must exist."""
    layout = Layout(data_root)
    names = submission_names(data_root)
    if limit is not None:
        names = names[: max(0, limit)]
    if not names:
        raise PipelineError(f"{layout.sample_submission_csv}: names no test images")
    paths = [layout.test_dir / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise PipelineError(
            f"{missing[0]}: test image not found{more}; every name in "
            f"{layout.sample_submission_csv} needs its image in {layout.test_dir}"
        )
    return names, paths


def submit(
    cfg: Config,
    checkpoints: Sequence[str | Path],
    data_root: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    device: torch.device | str | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> SubmitResult:
    """Predict the test set into the submission file ``out`` (``.csv.gz``); resumable.

    ``dist`` places this process in a torchrun world (default: a single process).
    ``on_chunk(rows_done)`` is called after every chunk is durably written.
    """
    t0 = time.perf_counter()
    dist = dist or DistInfo(device=pick_device(None if device is None else str(device)))
    device = torch.device(device) if device is not None else dist.device
    out = Path(out)
    names, paths = sample_images(data_root, limit)
    shape = image_shape(paths[0])
    if shape != (FULL_HEIGHT, FULL_WIDTH) and dist.is_main:
        print(f"note: test images are {shape[1]}x{shape[0]}, not Kaggle's "
              f"{FULL_WIDTH}x{FULL_HEIGHT}: this file is for this data set only", file=sys.stderr)
    ensemble = load_ensemble(checkpoints, device, cfg.predict)

    p = cfg.predict
    # What the rows are computed from; each shard's key adds its block of names.
    run_key = fingerprint([m.source for m in ensemble.members],
                          (p.tta, p.threshold, p.largest_component, p.precision,
                           p.channels_last, p.batch_size), shape)
    blocks = [block_range(len(names), r, dist.world_size, p.batch_size)
              for r in range(dist.world_size)]
    keys = [fingerprint([], run_key, a, b, names[a:b]) for a, b in blocks]
    start, stop = blocks[dist.rank]
    writer = ShardWriter(shard_path(out, dist.rank, dist.world_size), keys[dist.rank],
                         header=HEADER if start == 0 else None)
    if writer.discarded and dist.is_main:
        print(f"note: {writer.path} came from other checkpoints or settings; starting afresh",
              file=sys.stderr)
    resumed = writer.rows_done
    todo = paths[start + resumed : stop]
    if resumed and dist.is_main:
        print(f"resuming: {resumed} of {stop - start} rows already written", file=sys.stderr)

    try:
        preds = iter_predictions(ensemble, todo, p, device, shape,
                                 progress="submit" if progress and dist.is_main else False)
        for pred in preds:
            rles = masks_to_rle(pred.probs, p.threshold, p.largest_component)
            writer.add(csv_lines(pred.names, rles), len(rles))
            if writer.pending >= cfg.submit.shard_every:
                writer.flush()
                if on_chunk:
                    on_chunk(writer.rows_done)
    finally:
        writer.flush()  # every finished row is kept, also on an error or Ctrl-C

    if dist.is_main:
        # Other ranks may still be predicting (much longer after a resume): wait for their
        # stamps rather than at a collective barrier, which would time out.
        shards = [shard_path(out, r, dist.world_size) for r in range(dist.world_size)]
        wait_for_shards(shards, keys, [b - a for a, b in blocks])
        merge_shards(shards, out, names, shape, dist.world_size)
    return SubmitResult(out, len(names), len(todo), resumed, time.perf_counter() - t0, shape)


def shard_done(shard: Path, key: str, rows: int) -> bool:
    """Whether ``shard``'s stamp says all ``rows`` rows for ``key`` are written."""
    try:
        state = json.loads(shard.with_name(shard.name + ".json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("key") == key and state.get("rows") == rows


def wait_for_shards(shards: Sequence[Path], keys: Sequence[str], rows: Sequence[int],
                    poll_s: float = 2.0) -> None:
    """Block until every shard is complete. (torchrun stops all ranks when one fails.)"""
    announced = False
    while pending := [s for s, k, n in zip(shards, keys, rows) if not shard_done(s, k, n)]:
        if not announced:
            print(f"waiting for {len(pending)} other rank(s) to finish their shards",
                  file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def merge_shards(
    shards: Sequence[Path], out: Path, names: Sequence[str], shape: tuple[int, int], world: int
) -> None:
    """Concatenate the finished shards into ``out``, validate it, rename it into place, then
    delete every part file of ``out`` (also those of runs with another number of processes).
    On any problem the shards stay and ``out`` is untouched."""
    for shard in shards:
        if not shard.is_file():
            raise PipelineError(
                f"{shard}: shard not found; with {world} processes every rank must write to a "
                "folder all of them share (--out-dir)"
            )
    with atomic_path(out) as tmp:
        concat_files(shards, tmp)
        check_submission(tmp, names, shape)
    stem = shard_path(out, 0, 1).name  # .<name>.part
    for path in out.parent.glob(f"{stem.removesuffix('.part')}.*"):
        if path.name.startswith(stem) or (".rank" in path.name and ".part" in path.name):
            path.unlink()


def upload(path: str | Path, message: str, competition: str = COMPETITION) -> None:
    """Submit ``path`` to Kaggle with ``message`` through the ``kaggle`` package."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise PipelineError(
            "--upload needs the kaggle package: pip install kaggle (the file itself is written)"
        ) from None
    except Exception as exc:  # noqa: BLE001 -- kaggle < 1.6 authenticates at import (OSError)
        raise PipelineError(f"kaggle: {str(exc).splitlines()[0]}; {CREDENTIALS}") from None
    try:
        api = KaggleApi()
        api.authenticate()
        api.competition_submit(str(path), message, competition)
    except Exception as exc:  # noqa: BLE001 -- network, credentials, rules: one line each
        text = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"kaggle upload of {path} failed: {text}; {CREDENTIALS}") from None


def _validate_only(file: Path, data_root: Path, limit: int | None) -> None:
    from pipeline.submission import validate_submission

    layout = Layout(data_root)
    sample = layout.sample_submission_csv
    if not sample.is_file():
        raise PipelineError(f"{sample}: not found; --data-root must hold sample_submission.csv")
    first = min(layout.test_dir.glob("*.jpg"), default=None) if layout.test_dir.is_dir() else None
    shape = image_shape(first) if first else (FULL_HEIGHT, FULL_WIDTH)
    problems = validate_submission(file, sample, shape, limit)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise PipelineError(f"{file}: not a valid submission ({len(problems)} problem(s) above)")
    typer.echo(f"{file}: valid ({shape[1]}x{shape[0]} masks, names and order of {sample})")


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    checkpoints: Annotated[Path, typer.Option(help="Folder holding <label>/fold<K>/best.pt.")]
    = Path("checkpoints"),
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="A checkpoint of the ensemble (repeatable); default: every fold of the model.")]
    = None,
    data_root: Annotated[Path | None, typer.Option(
        help="Kaggle-layout folder with test/ and sample_submission.csv (default: data.root).")]
    = None,
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
    device: DeviceOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Predict the test set with the fold ensemble and write a validated submission."""
    from pipeline.training.distributed import cleanup, setup

    cfg = cli_config(config, model, overrides)
    root = data_root or Path(cfg.data.root)
    if validate is not None:
        _validate_only(validate, root, limit)
        return
    ckpts = resolve_checkpoints(checkpoint, checkpoints, cfg.model.label)
    label = checkpoint_label(ckpts[0]) if checkpoint and not model else cfg.model.label
    out = out_dir / f"{name or cfg.submit.name}.csv.gz"
    dist = setup()
    if device and not dist.enabled:
        dist = DistInfo(device=torch.device(device))
    try:
        result = submit(cfg, ckpts, root, out, limit=limit, dist=dist)
    finally:
        cleanup(dist)
    if not dist.is_main:
        return
    rate = result.predicted / result.seconds if result.seconds else 0.0
    typer.echo(f"wrote {out}: {result.rows} rows, {len(ckpts)} model(s), tta={cfg.predict.tta}, "
               f"{result.predicted} predicted here at {rate:.2f} img/s"
               + (f", {result.resumed_rows} resumed" if result.resumed_rows else ""))
    if upload_:
        upload(out, message or f"{label} x{len(ckpts)} tta={'+'.join(cfg.predict.tta) or 'none'}")
        typer.echo(f"uploaded {out} to {COMPETITION}")


if __name__ == "__main__":
    app()
