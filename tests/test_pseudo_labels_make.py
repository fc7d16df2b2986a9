"""The pseudo-label folder: its masks and RLE rows are the ensemble's thresholded predictions,
exactly the images the rule keeps; the report holds every image's fraction; a finished folder
is up to date, an interrupted run resumes, a new rule removes what it no longer keeps."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from pipeline import rle
from pipeline.data.io import image_shape, read_mask
from pipeline.data.layout import Layout, mask_name
from pipeline.errors import PipelineError
from pipeline.inference.engine import iter_predictions, load_ensemble, to_masks
from pipeline.pseudo_labels import make
from pipeline.pseudo_labels.make import make_pseudo_labels, unlabelled_images
from pipeline.pseudo_labels.rule import uncertainty


@pytest.fixture(scope="module")
def setup(tiny_data, tiny_cache, tiny_trained):
    """The config (max_uncertain: the median fraction, so the rule splits the photos), the
    photos, and the reference: each photo's mask and uncertain fraction, predicted here."""
    cfg = tiny_config(tiny_data, tiny_cache)
    photos = unlabelled_images(Layout(tiny_data).test_dir)
    ensemble = load_ensemble([tiny_trained.best], "cpu", cfg.predict)
    ref = {}
    for pred in iter_predictions(ensemble, photos, cfg.predict, "cpu", image_shape(photos[0])):
        masks = to_masks(pred.probs, cfg.predict.threshold)
        fraction, area = uncertainty(pred.probs, masks, cfg.pseudo.low, cfg.pseudo.high)
        for j, name in enumerate(pred.names):
            ref[name] = (masks[j].numpy().astype(np.uint8), float(fraction[j]), int(area[j]))
    finite = [f for _, f, a in ref.values() if a > 0]
    median = float(np.median(finite))
    cfg = dataclasses.replace(cfg, pseudo=dataclasses.replace(cfg.pseudo, max_uncertain=median))
    kept = {n for n, (_, f, a) in ref.items() if a > 0 and f <= median}
    assert 0 < len(kept) < len(photos)
    return cfg, photos, ref, kept


def test_the_folder_holds_the_kept_predictions(setup, tiny_trained, tmp_path):
    cfg, photos, ref, kept = setup
    out = tmp_path / "pseudo"
    result = make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    assert (result.seen, result.kept, result.predicted) == (len(photos), len(kept), len(photos))
    layout = Layout(out)
    assert {p.name for p in layout.train_dir.iterdir()} == kept
    assert {p.name for p in layout.mask_dir.iterdir()} == {mask_name(n) for n in kept}
    csv = pd.read_csv(layout.train_masks_csv, keep_default_na=False)
    assert list(csv.columns) == ["img", "rle_mask"] and set(csv["img"]) == kept
    shape = image_shape(photos[0])
    for name, code in zip(csv["img"], csv["rle_mask"]):
        mask = ref[name][0]
        assert np.array_equal(read_mask(layout.mask_path(name)), mask), name
        assert np.array_equal(rle.decode(code, shape), mask), name
        assert os.path.realpath(layout.image_path(name)) == str(photos[0].parent.resolve() / name)
    report = json.loads((out / "pseudo.json").read_text())
    assert report["images_seen"] == len(photos) and report["kept"] == len(kept)
    assert report["rule"]["max_uncertain"] == cfg.pseudo.max_uncertain and report["rule"]["text"]
    assert list(report["images"]) == [p.name for p in photos]
    for name, entry in report["images"].items():
        assert entry["kept"] == (name in kept)
        assert entry["uncertain_fraction"] == pytest.approx(ref[name][1])
    assert not list(out.glob(".*"))  # no part or temp files left

    again = make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    assert (again.predicted, again.kept) == (0, len(kept))  # finished: up to date

    # a stricter rule is another run: it removes the photos and masks it no longer keeps
    strict = dataclasses.replace(cfg, pseudo=dataclasses.replace(cfg.pseudo, max_uncertain=0.0))
    fewer = make_pseudo_labels(strict, [tiny_trained.best], photos, out, progress=False)
    left = {n for n, (_, f, a) in ref.items() if a > 0 and f <= 0.0}
    assert fewer.predicted == len(photos) and fewer.kept == len(left)
    assert {p.name for p in layout.train_dir.glob("*.jpg")} == left
    assert len(list(layout.mask_dir.glob("*.gif"))) == len(left)


def test_an_interrupted_run_resumes_where_it_stopped(setup, tiny_trained, tmp_path, monkeypatch):
    cfg, photos, _, kept = setup
    out = tmp_path / "pseudo"
    real = make.iter_predictions

    def one_batch_then_kill(*args, **kwargs):
        for pred in real(*args, **kwargs):
            yield pred
            raise KeyboardInterrupt

    monkeypatch.setattr(make, "iter_predictions", one_batch_then_kill)
    with pytest.raises(KeyboardInterrupt):
        make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    assert not (out / "pseudo.json").exists()  # unfinished: nothing reads it as training data
    monkeypatch.setattr(make, "iter_predictions", real)
    result = make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    batch = cfg.predict.batch_size
    assert (result.resumed, result.predicted) == (batch, len(photos) - batch)
    assert result.kept == len(kept)
    csv = pd.read_csv(Layout(out).train_masks_csv)
    assert list(csv["img"]) == [p.name for p in photos if p.name in kept]  # the photos' order


def test_bad_inputs_are_one_line(setup, tiny_data, tiny_trained, tmp_path):
    cfg, photos, _, _ = setup
    with pytest.raises(PipelineError, match="labelled data"):  # never overwrite a data root
        make_pseudo_labels(cfg, [tiny_trained.best], photos, tiny_data, progress=False)
    with pytest.raises(PipelineError, match="image folder not found"):
        unlabelled_images(tmp_path / "nowhere")
    with pytest.raises(PipelineError, match="image not found"):
        unlabelled_images(Layout(tiny_data).test_dir, ["0123456789ab_01.jpg"])
    with pytest.raises(PipelineError, match="not a Carvana image name"):
        unlabelled_images(Layout(tiny_data).test_dir, ["photo.jpg"])
