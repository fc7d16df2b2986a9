"""``python -m pipeline.benchmark rle``: our RLE against the common Kaggle kernel, same masks,
same run; and :func:`pipeline.postprocess.largest_component` (runs, only run boundaries leave
the device) against OpenCV labelling of the full masks on the host, on one batch of the first
few masks with seeded specks added (a real mask is one region: nothing to remove); and the
submission's clean-up + RLE of that batch (:func:`pipeline.inference.encode.masks_to_rle`: both
from the row runs on the host) against rebuilding the cleaned masks and encoding them again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import typer

from pipeline import rle
from pipeline.atomic import write_json
from pipeline.data.io import read_mask
from pipeline.data.layout import Layout
from pipeline.errors import PipelineError, one_line_errors
from pipeline.inference.encode import masks_to_rle
from pipeline.postprocess import largest_component


def best_seconds(fn: Callable, items: list, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn`` over all ``items`` (best-of resists noise)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best


def largest_component_reference(masks: torch.Tensor) -> torch.Tensor:
    """The full-mask baseline: every mask copied to the host, labelled by OpenCV, the largest
    region copied back (ties, rare: the region whose first pixel comes first in row-major
    order, as ours; OpenCV's own label order is not row-major)."""
    host = masks.to("cpu", torch.uint8).numpy()
    out = np.zeros(host.shape, dtype=bool)
    for i, mask in enumerate(host):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            continue
        area = stats[1:, cv2.CC_STAT_AREA]
        tied = 1 + np.flatnonzero(area == area.max())
        keep = tied[0] if len(tied) == 1 else labels.flat[np.argmax(np.isin(labels, tied))]
        out[i] = labels == keep
    return torch.from_numpy(out).to(masks.device)


def with_specks(masks: list[np.ndarray], batch: int, seed: int = 0) -> torch.Tensor:
    """The first ``batch`` masks as one bool N x H x W batch, 0.01% of pixels set at random."""
    rng = np.random.default_rng(seed)
    out = np.stack(masks[:batch]) != 0
    out |= rng.random(out.shape) < 1e-4
    return torch.from_numpy(out)


def run_rle_benchmark(masks: list[np.ndarray], repeats: int = 5, batch: int = 4) -> dict:
    """Encode and decode ``masks`` with ours and the reference, and keep the largest region of
    the first ``batch`` (with specks) with ours and OpenCV; check they agree; time both."""
    texts = [rle.encode(m) for m in masks]
    for m, t in zip(masks, texts):
        if t != rle.encode_reference(m) or not np.array_equal(rle.decode(t, m.shape), m):
            raise AssertionError("our RLE disagrees with the reference: benchmark aborted")
    shape = masks[0].shape
    ours_enc = best_seconds(rle.encode, masks, repeats)
    ref_enc = best_seconds(rle.encode_reference, masks, repeats)
    ours_dec = best_seconds(lambda t: rle.decode(t, shape), texts, repeats)
    ref_dec = best_seconds(lambda t: rle.decode_reference(t, shape), texts, repeats)
    specked = with_specks(masks, batch)
    if not torch.equal(largest_component(specked), largest_component_reference(specked)):
        raise AssertionError("largest_component disagrees with OpenCV: benchmark aborted")
    ours_lc = best_seconds(largest_component, [specked], repeats)
    ref_lc = best_seconds(largest_component_reference, [specked], repeats)
    probs = specked.float()
    if masks_to_rle(probs, 0.5, True) != rle.encode_torch(largest_component(specked)):
        raise AssertionError("clean-up + RLE from runs disagrees: benchmark aborted")
    runs_cr = best_seconds(lambda p: masks_to_rle(p, 0.5, True), [probs], repeats)
    rebuilt_cr = best_seconds(lambda p: rle.encode_torch(largest_component(p > 0.5)), [probs],
                              repeats)
    n, b = len(masks), len(specked)
    return {
        "masks": n,
        "shape": list(shape),
        "encode_ms": {"ours": 1e3 * ours_enc / n, "reference": 1e3 * ref_enc / n},
        "decode_ms": {"ours": 1e3 * ours_dec / n, "reference": 1e3 * ref_dec / n},
        "encode_speedup": ref_enc / ours_enc,
        "decode_speedup": ref_dec / ours_dec,
        "largest_component_ms": {"masks": b, "ours": 1e3 * ours_lc / b,
                                 "reference": 1e3 * ref_lc / b},
        "largest_component_speedup": ref_lc / ours_lc,
        "cleanup_rle_ms": {"masks": b, "from_runs": 1e3 * runs_cr / b,
                           "rebuilt": 1e3 * rebuilt_cr / b},
        "cleanup_rle_speedup": rebuilt_cr / runs_cr,
        "torch_threads": torch.get_num_threads(),
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
        """Encode/decode real-size masks and keep their largest region; print the speed ratios
        against the Kaggle reference and OpenCV."""
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
        lc = result["largest_component_ms"]
        typer.echo(f"largest component ({lc['masks']} masks in one batch, CPU, "
                   f"{result['torch_threads']} threads): ours {lc['ours']:.2f} ms, OpenCV on the "
                   f"full masks {lc['reference']:.2f} ms (per mask) -> ours "
                   f"{result['largest_component_speedup']:.2f}x as fast")
        cr = result["cleanup_rle_ms"]
        typer.echo(f"clean-up + RLE ({cr['masks']} masks): from the row runs {cr['from_runs']:.2f} "
                   f"ms, masks rebuilt and encoded again {cr['rebuilt']:.2f} ms (per mask) -> "
                   f"{result['cleanup_rle_speedup']:.2f}x as fast")
        typer.echo(f"wrote {out}")
