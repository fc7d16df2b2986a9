"""The evaluation report: the per-image CSV, the histogram and per-angle PNGs, the worst images
(replaced on a re-run), and the outline colours of the overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import tiny_config

from pipeline.evaluate.oof import evaluate_oof
from pipeline.evaluate.report import PRED, TRUTH, overlay_outlines, write_report


def test_report_files(tiny_data, tiny_folds, tiny_cache, tiny_trained, tmp_path):
    model = tiny_trained.roots.model(tiny_trained.label)  # fold 0 only
    result = evaluate_oof(tiny_config(tiny_data, tiny_cache).predict, tiny_data, tiny_folds, tmp_path,
                          model=model, worst_k=3, progress=False)
    assert result.summary.skipped_folds == [1] and result.summary.images == 32
    written = write_report(result, tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names[:3] == ["dice_by_angle.png", "dice_hist.png", "oof_dice.csv"]
    assert len([n for n in names if n.startswith("worst_")]) == 3
    assert names[3].startswith("worst_01_" + Path(result.worst[0].img).stem)
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(tmp_path / "report" / "oof_dice.csv")
    assert list(csv.columns)[:6] == ["img", "car_id", "angle", "make", "fold", "dice"]
    assert len(csv) == 32
    # the summary is the stage's --metrics-out file, not a second copy in the report
    assert not (tmp_path / "report" / "cv.json").exists()
    # a re-run with fewer worst images leaves no stale worst_*.png behind
    result.worst = result.worst[:1]
    write_report(result, tmp_path / "report")
    assert len(list((tmp_path / "report").glob("worst_*.png"))) == 1


def test_overlay_draws_truth_green_and_prediction_red():
    image = np.full((40, 60, 3), 128, np.uint8)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:30, 10:30] = 1
    pred = np.zeros_like(truth)
    pred[5:20, 35:55] = 1
    out = overlay_outlines(image, truth, pred)
    assert tuple(out[10, 20]) == TRUTH and tuple(out[5, 45]) == PRED
    assert tuple(out[20, 20]) == (128, 128, 128)  # inside stays the photo
