"""Predict unlabelled photos with the ensemble (flip TTA, probabilities averaged) and write the
confident ones (:mod:`pipeline.pseudo_labels.rule`) as a pseudo-label folder in Kaggle layout
(:mod:`pipeline.data.pseudo`): a link to each kept photo (a copy where links fail), its mask
GIF and RLE row, and ``pseudo.json`` (the rule, every image's uncertain fraction).

- Atomic: each mask and link appears whole under its final name (temp file + rename); the
  report is written last, so a folder without ``pseudo.json`` is unfinished and nothing reads
  it as training data.
- Resumable: after every batch one line per image is appended (and fsync'd) to a hidden part
  file stamped with a fingerprint of the checkpoints, the predict and pseudo settings and the
  image paths. A re-run with the same fingerprint predicts only the images not yet recorded
  (a finished folder: nothing); any other fingerprint starts afresh and, at the end, removes
  the photos and masks it no longer keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import rle
from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.config import Config, PredictConfig, result_keys
from pipeline.data.io import image_shape, write_mask_gif
from pipeline.data.layout import NAME_RE, Layout, mask_name, parse_name
from pipeline.data.pseudo import PSEUDO_REPORT
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint
from pipeline.inference.engine import Prediction, iter_predictions, load_ensemble, to_masks
from pipeline.pseudo_labels.rule import check_rule, keep, uncertainty

PART = ".pseudo.part.jsonl"
RULE = ("uncertain pixels: low < p < high, p the TTA- and model-averaged probability; kept: "
        "mask (p > threshold) not empty and uncertain pixels / mask pixels <= max_uncertain")


@dataclass
class PseudoResult:
    out: Path
    seen: int  # images of this run
    kept: int
    predicted: int  # predicted in this call (0 when the folder was already finished)
    resumed: int  # taken over from an interrupted call with the same fingerprint
    seconds: float


def unlabelled_images(folder: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The photos to pseudo-label: ``names`` in ``folder`` (default every ``*.jpg``, sorted);
    each must exist and be a Carvana name, which the folder's training rows need."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: image folder not found; pass --images DIR")
    if names is None:
        names = sorted(p.name for p in folder.glob("*.jpg"))
        if not names:
            raise PipelineError(f"{folder}: no .jpg images to pseudo-label")
    for name in names:
        parse_name(name)
    paths = [folder / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: image not found ({len(missing)} missing in {folder})")
    return paths


def make_pseudo_labels(cfg: Config, checkpoints: Sequence[str | Path], images: Sequence[Path],
                       out: str | Path, *, device="cpu", progress: bool = True) -> PseudoResult:
    """Predict ``images`` with the ``checkpoints`` ensemble and write the pseudo-label folder
    ``out`` (see the module docstring); resumable."""
    t0 = time.perf_counter()
    p = cfg.predict
    check_rule(cfg.pseudo, p.threshold)
    out, images = Path(out), [Path(x) for x in images]
    _check_out(out, images)
    key = fingerprint(checkpoints, _settings(p), cfg.pseudo, [str(x.resolve()) for x in images])
    finished = _finished(out, key)
    if finished is not None:
        return PseudoResult(out, len(images), finished, 0, len(images), time.perf_counter() - t0)
    (out / PSEUDO_REPORT).unlink(missing_ok=True)  # unfinished until the new report is written
    part = out / PART
    done = _resume(part, key)
    todo = [x for x in images if x.name not in done]
    if todo:
        ensemble = load_ensemble(checkpoints, device, p)
        preds = iter_predictions(ensemble, todo, p, device, image_shape(images[0]),
                                 progress="pseudo" if progress else False)
        with part.open("a") as fh:
            for pred in preds:
                fh.write("".join(_write_batch(pred, todo, Layout(out), cfg)))
                fh.flush()
                os.fsync(fh.fileno())
    kept = _finish(out, part, images, key, cfg, [str(c) for c in checkpoints])
    return PseudoResult(out, len(images), kept, len(todo), len(done), time.perf_counter() - t0)


def _settings(p: PredictConfig) -> dict:
    return {k: getattr(p, k) for k in result_keys(PredictConfig)}


def _check_out(out: Path, images: list[Path]) -> None:
    if not images:
        raise PipelineError("no images to pseudo-label")
    layout = Layout(out)
    if layout.train_masks_csv.is_file() and not (out / PSEUDO_REPORT).is_file() \
            and not (out / PART).is_file():
        raise PipelineError(f"{out}: holds labelled data (train_masks.csv, no {PSEUDO_REPORT}); "
                            "write pseudo-labels to another --out folder")
    if layout.train_dir.resolve() in {x.parent.resolve() for x in images}:
        raise PipelineError(f"{out}: the images come from its own train/; choose another --out")


def _finished(out: Path, key: str) -> int | None:
    """The kept count of a finished folder with fingerprint ``key``, else None."""
    try:
        report = json.loads((out / PSEUDO_REPORT).read_text())
        return int(report["kept"]) if report.get("fingerprint") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _resume(part: Path, key: str) -> dict[str, dict]:
    """The records of an interrupted run with fingerprint ``key`` (a torn last line dropped);
    otherwise a fresh part file holding only the stamp."""
    try:
        data = part.read_bytes() if part.is_file() else b""
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode().splitlines()
        if lines and json.loads(lines[0]).get("fingerprint") == key:
            records = {r["img"]: r for r in map(json.loads, lines[1:])}
            if end != len(data):
                os.truncate(part, end)
            return records
    except (ValueError, KeyError, UnicodeDecodeError):
        pass  # not ours or damaged: start afresh
    write_text(part, json.dumps({"fingerprint": key}) + "\n")
    return {}


def _write_batch(pred: Prediction, paths: list[Path], layout: Layout, cfg: Config) -> list[str]:
    """Write the kept images of one batch; one JSON line per image for the part file."""
    p, rule = cfg.predict, cfg.pseudo
    masks = to_masks(pred.probs, p.threshold, p.largest_component)
    fraction, area = uncertainty(pred.probs, masks, rule.low, rule.high)
    kept = keep(fraction, area, rule.max_uncertain)
    lines = []
    for j, (i, name) in enumerate(zip(pred.indices, pred.names)):
        record = {"img": name, "uncertain_fraction": _finite(float(fraction[j])),
                  "mask_pixels": int(area[j]), "kept": bool(kept[j])}
        if record["kept"]:
            mask = masks[j].cpu().numpy().astype(np.uint8)
            _link(paths[i], layout.image_path(name))
            with atomic_path(layout.mask_path(name)) as tmp:
                write_mask_gif(tmp, mask)
            record["rle"] = rle.encode(mask)
        lines.append(json.dumps(record) + "\n")
    return lines


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None  # JSON has no inf: an empty mask is null


def _link(source: Path, target: Path) -> None:
    """``target`` becomes a symlink to ``source`` (a copy where links fail), atomically."""
    source = source.resolve()
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.symlink(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _finish(out: Path, part: Path, images: list[Path], key: str, cfg: Config,
            checkpoints: list[str]) -> int:
    """From the part file: ``train_masks.csv``, stale files removed, then ``pseudo.json``."""
    layout, entries = Layout(out), {}
    with atomic_path(layout.train_masks_csv) as tmp, tmp.open("w") as csv, part.open() as fh:
        next(fh)  # the stamp
        csv.write("img,rle_mask\n")
        for line in fh:  # prediction order, which is the images' order
            record = json.loads(line)
            if record["kept"]:
                csv.write(f"{record['img']},{record['rle']}\n")
            entries[record["img"]] = {k: record[k]
                                      for k in ("uncertain_fraction", "mask_pixels", "kept")}
    entries = {x.name: entries[x.name] for x in images}
    keep_names = {name for name, e in entries.items() if e["kept"]}
    _remove_stale(layout, keep_names)
    p, rule = cfg.predict, cfg.pseudo
    write_json(out / PSEUDO_REPORT, {
        "fingerprint": key,
        "rule": {"text": RULE, "low": rule.low, "high": rule.high,
                 "max_uncertain": rule.max_uncertain, "threshold": p.threshold,
                 "largest_component": p.largest_component, "tta": list(p.tta)},
        "checkpoints": checkpoints,
        "images_seen": len(entries),
        "kept": len(keep_names),
        "images": entries,
    })
    part.unlink()
    return len(keep_names)


def _remove_stale(layout: Layout, keep_names: set[str]) -> None:
    """Photos and masks of an earlier run that this one does not keep."""
    masks = {mask_name(n) for n in keep_names}
    for path in layout.train_dir.glob("*.jpg"):
        if NAME_RE.match(path.name) and path.name not in keep_names:
            path.unlink()
    for path in layout.mask_dir.glob("*_mask.gif"):
        if path.name not in masks:
            path.unlink()
