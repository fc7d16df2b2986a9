"""``python -m pipeline.benchmark rle``: our RLE against the common Kaggle kernel, same masks,
same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline import rle
from pipeline.atomic import write_json
from pipeline.data.io import read_mask
from pipeline.data.layout import Layout
from pipeline.errors import PipelineError, one_line_errors


def best_seconds(fn: Callable, items: list, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn`` over all ``items`` (best-of resists noise)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best


def run_rle_benchmark(masks: list[np.ndarray], repeats: int = 5) -> dict:
    """Encode and decode ``masks`` with ours and the reference; check they agree; time both."""
    texts = [rle.encode(m) for m in masks]
    for m, t in zip(masks, texts):
        if t != rle.encode_reference(m) or not np.array_equal(rle.decode(t, m.shape), m):
            raise AssertionError("our RLE disagrees with the reference: benchmark aborted")
    shape = masks[0].shape
    ours_enc = best_seconds(rle.encode, masks, repeats)
    ref_enc = best_seconds(rle.encode_reference, masks, repeats)
    ours_dec = best_seconds(lambda t: rle.decode(t, shape), texts, repeats)
    ref_dec = best_seconds(lambda t: rle.decode_reference(t, shape), texts, repeats)
    n = len(masks)
    return {
        "masks": n,
        "shape": list(shape),
        "encode_ms": {"ours": 1e3 * ours_enc / n, "reference": 1e3 * ref_enc / n},
        "decode_ms": {"ours": 1e3 * ours_dec / n, "reference": 1e3 * ref_dec / n},
        "encode_speedup": ref_enc / ours_enc,
        "decode_speedup": ref_dec / ours_dec,
    }


def load_masks(root: Path, limit: int) -> list[np.ndarray]:
    paths = sorted(Layout(root).mask_dir.glob("*_mask.gif"))[:limit]
    if not paths:
        raise PipelineError(f"{Layout(root).mask_dir}: no *_mask.gif files to benchmark on")
    return [read_mask(p) for p in paths]


def register(app: typer.Typer) -> None:
    @app.command("rle")
    @one_line_errors
    def rle_command(
        data_root: Annotated[Path, typer.Option(help="Kaggle-layout folder with train_masks/.")]
        = Path("data/demo"),
        limit: Annotated[int, typer.Option(help="Number of masks.")] = 64,
        repeats: Annotated[int, typer.Option(help="Best of this many passes.")] = 5,
        out: Annotated[Path, typer.Option(help="JSON result.")] = Path("reports/benchmark_rle.json"),
    ) -> None:
        """Encode/decode real-size masks; print the speed ratio against the Kaggle reference."""
        masks = load_masks(data_root, limit)
        result = run_rle_benchmark(masks, repeats)
        result["data_root"] = str(data_root)
        write_json(out, result)
        e, d = result["encode_ms"], result["decode_ms"]
        typer.echo(f"RLE on {result['masks']} masks of {result['shape'][0]}x{result['shape'][1]} "
                   f"(best of {repeats})")
        typer.echo(f"encode: ours {e['ours']:.2f} ms, reference {e['reference']:.2f} ms -> "
                   f"{result['encode_speedup']:.2f}x faster")
        typer.echo(f"decode: ours {d['ours']:.2f} ms, reference {d['reference']:.2f} ms -> "
                   f"{result['decode_speedup']:.2f}x faster")
        typer.echo(f"wrote {out}")
