"""The loader feeding the inference engine: workers resize each image to every input size,
masks and full-size photos come along when asked for, and a missing, corrupt or wrongly sized
image becomes one clear error line raised after every earlier batch was predicted."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from pipeline.config import PredictConfig, default
from pipeline.data.io import read_image, read_mask, write_image
from pipeline.data.layout import Layout
from pipeline.data.layout import submission_names as sample_names
from pipeline.errors import PipelineError
from pipeline.inference.engine import iter_predictions, load_ensemble, prepare_engine
from pipeline.inference.loader import ImageDataset, collate, make_loader

FP32 = default(PredictConfig, precision="fp32", num_workers=0, batch_size=4)


def test_dataset_resizes_to_every_size_and_collates(tiny_data):
    layout = Layout(tiny_data)
    imgs = sorted(p.name for p in layout.train_dir.glob("*.jpg"))[:3]
    dataset = ImageDataset([layout.train_dir / i for i in imgs], [(32, 48), (16, 24)], (64, 96),
                           [layout.mask_path(i) for i in imgs])
    batch = next(iter(make_loader(dataset, FP32, torch.device("cpu"))))
    assert batch.error == "" and batch.names == imgs and batch.indices == [0, 1, 2]
    assert {s: tuple(t.shape) for s, t in batch.images.items()} == {
        (32, 48): (3, 32, 48, 3), (16, 24): (3, 16, 24, 3)}
    assert batch.images[(32, 48)].dtype == torch.uint8
    assert batch.masks.shape == (3, 64, 96) and batch.masks.dtype == torch.uint8
    with pytest.raises(ValueError, match="one to one"):
        ImageDataset([layout.train_dir / imgs[0]], [(32, 48)], (64, 96), [])


def test_the_full_size_photos_come_along_for_the_edge_refiner(tiny_data):
    paths = [Layout(tiny_data).test_dir / n for n in sample_names(tiny_data)[:3]]
    cpu = torch.device("cpu")
    plain = next(iter(make_loader(ImageDataset(paths, [(32, 48)], (64, 96)), FP32, cpu)))
    assert plain.photos is None
    workers = dataclasses.replace(FP32, num_workers=1)
    batch = next(iter(make_loader(ImageDataset(paths, [(32, 48)], (64, 96), photos=True),
                                  workers, cpu)))
    assert batch.photos.dtype == torch.uint8 and batch.photos.shape == (3, 64, 96, 3)
    assert np.array_equal(batch.photos.numpy(), np.stack([read_image(p) for p in paths]))
    assert torch.equal(batch.images[(32, 48)], plain.images[(32, 48)])


def test_a_bad_item_is_an_error_line_not_an_exception(tmp_path, tiny_data):
    good = Layout(tiny_data).test_dir / sample_names(tiny_data)[0]
    dataset = ImageDataset([good, tmp_path / "missing.jpg"], [(32, 48)], (64, 96))
    items = [dataset[0], dataset[1]]
    assert items[0]["error"] == "" and "missing.jpg" in items[1]["error"]
    batch = collate(items)
    assert batch.names == [good.name, "missing.jpg"]
    assert "missing.jpg" in batch.error and batch.images == {} and batch.masks is None


def test_iter_predictions_with_masks(tiny_data, tiny_trained):
    layout = Layout(tiny_data)
    imgs = sorted(p.name for p in layout.train_dir.glob("*.jpg"))[:3]
    ens = load_ensemble([tiny_trained.best], prepare_engine(FP32))
    (pred,) = iter_predictions(ens, [layout.train_dir / i for i in imgs], (64, 96),
                               mask_paths=[layout.mask_path(i) for i in imgs])
    assert pred.masks.shape == (3, 64, 96)
    assert np.array_equal(pred.masks[1].numpy(), read_mask(layout.mask_path(imgs[1])))


@pytest.mark.parametrize("defect", ["size", "corrupt", "missing"])
def test_bad_image_is_one_clear_error_after_the_good_batches(tmp_path, tiny_data, tiny_trained,
                                                             defect):
    names = sample_names(tiny_data)[:8]
    for n in names:
        shutil.copy(Layout(tiny_data).test_dir / n, tmp_path / n)
    bad = tmp_path / names[5]
    if defect == "size":
        write_image(bad, np.zeros((64, 95, 3), np.uint8))
    elif defect == "corrupt":
        bad.write_bytes(b"not a jpeg")
    else:
        bad.unlink()
    ens = load_ensemble([tiny_trained.best],
                        prepare_engine(dataclasses.replace(FP32, num_workers=1)))
    seen = []
    with pytest.raises(PipelineError) as err:
        for pred in iter_predictions(ens, [tmp_path / n for n in names], (64, 96)):
            seen.extend(pred.names)
    message = str(err.value)
    assert names[5] in message and "\n" not in message
    assert seen == names[:4]  # the first batch was predicted before the error
    if defect == "size":
        assert "95x64" in message and "expected 96x64" in message
