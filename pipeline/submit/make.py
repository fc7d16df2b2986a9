"""Predict the test set into a submission file: every image named in ``sample_submission.csv``,
in its order, from ``test/``, with the fold ensemble and flip TTA, streamed into
``<name>.csv.gz`` in constant memory.

- Resumable: rows are appended in gzip chunks of ``submit.shard_every`` rows to a hidden part
  file with a stamp (rows done, bytes, and a resume key of the ensemble, its prediction
  settings and the names); a re-run with the same key continues after the last chunk, any
  other starts afresh.
- The final file is validated and renamed into place atomically; on a failure the part files
  stay, so nothing computed is lost.
- Under torchrun, rank r predicts the r-th contiguous block of names (blocks are whole batches,
  so every batch is the one a single process would run) into its own shard, and rank 0
  concatenates the shards in order (shards must be on a filesystem every rank sees).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import faults
from pipeline.config import FULL_HEIGHT, FULL_WIDTH, PredictConfig, SubmitConfig
from pipeline.data.io import image_shape
from pipeline.data.layout import Layout, submission_names
from pipeline.distributed import DistInfo, block_range
from pipeline.errors import PipelineError
from pipeline.inference.encode import iter_rles
from pipeline.inference.engine import iter_predictions, load_ensemble, prepare_engine
from pipeline.keys import output_key
from pipeline.submit.format import HEADER, csv_lines
from pipeline.submit.shards import ShardWriter, merge_shards, shard_path, wait_for_shards


@dataclass
class SubmitResult:
    path: Path
    rows: int  # rows in the final file
    predicted: int  # rows this process predicted in this run (0 when all were resumed)
    resumed_rows: int  # rows this process took over from an earlier run
    seconds: float
    shape: tuple[int, int]


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


def make_submission(
    predict: PredictConfig,
    submit: SubmitConfig,
    checkpoints: Sequence[str | Path],
    data_root: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> SubmitResult:
    """Predict the test set into the submission file ``out`` (``.csv.gz``); resumable.

    ``dist`` places this process in a torchrun world (default: a single process).
    ``on_chunk(rows_done)`` is called (from the writer thread) after every chunk is durably
    written; an exception it raises stops the run at the next chunk.
    """
    t0 = time.perf_counter()
    dist = dist or DistInfo()
    device = dist.device
    out = Path(out)
    names, paths = sample_images(data_root, limit)
    shape = image_shape(paths[0])
    if shape != (FULL_HEIGHT, FULL_WIDTH) and dist.is_main:
        print(f"note: test images are {shape[1]}x{shape[0]}, not Kaggle's "
              f"{FULL_WIDTH}x{FULL_HEIGHT}: this file is for this data set only", file=sys.stderr)
    ensemble = load_ensemble(checkpoints, prepare_engine(predict, device,
                                                         announce=dist.is_main))
    # What the rows are computed from; each shard's key adds its block of names. (Not the
    # test images' times: touching one file would redo every row of 100,064.)
    run_key = output_key([], ensemble.key, shape, str(Path(data_root).resolve()))
    blocks = [block_range(len(names), r, dist.world_size, predict.batch_size)
              for r in range(dist.world_size)]
    keys = [output_key([], run_key, a, b, names[a:b]) for a, b in blocks]
    start, stop = blocks[dist.rank]
    writer = ShardWriter(shard_path(out, dist.rank, dist.world_size), keys[dist.rank],
                         header=HEADER if start == 0 else None, on_written=on_chunk)
    if writer.discarded and dist.is_main:
        print(f"note: {writer.path} came from other checkpoints or settings; starting afresh",
              file=sys.stderr)
    resumed = writer.rows_done
    todo = paths[start + resumed : stop]
    if resumed and dist.is_main:
        print(f"resuming: {resumed} of {stop - start} rows already written", file=sys.stderr)

    try:
        preds = iter_predictions(ensemble, todo, shape,
                                 progress="submit" if progress and dist.is_main else False)
        for batch in iter_rles(preds, ensemble.engine):
            writer.add(csv_lines(batch.names, batch.rles), len(batch.rles))
            faults.reached("submit.batch")
            if writer.pending >= submit.shard_every:
                writer.flush()
    finally:
        try:
            writer.flush()  # every finished row is kept, also on an error or Ctrl-C
        finally:
            writer.close()

    if dist.is_main:
        # Other ranks may still be predicting (much longer after a resume): wait for their
        # stamps rather than at a collective barrier, which would time out.
        shards = [shard_path(out, r, dist.world_size) for r in range(dist.world_size)]
        wait_for_shards(shards, keys, [b - a for a, b in blocks],
                        stall_s=submit.stall_timeout_s)
        merge_shards(shards, out, names, shape, dist.world_size)
    return SubmitResult(out, len(names), len(todo), resumed, time.perf_counter() - t0, shape)
