"""Reading the images to predict: a Dataset whose workers decode each JPEG and resize it to every
input size an ensemble needs (and keep the full-size photo when an edge refiner needs it), or,
with ``decode="device"``, only read each JPEG's bytes for a batched decode on the device
(:mod:`pipeline.inference.decode`); and the batches it collates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config import FULL_SHAPE, PredictConfig
from pipeline.data.io import read_image, read_mask
from pipeline.data.transforms import resize_image
from pipeline.errors import PipelineError
from pipeline.inference.decode import check_decoder, read_jpeg


class ImageDataset(Dataset):
    """Reads one image (and optionally its mask) per item and resizes the image to each of
    ``sizes`` in the worker; with ``photos`` the full-size uint8 photo comes along too (the
    edge refiner's input). With ``decode="device"`` an item holds the JPEG's bytes instead
    (``jpeg``; sizes and photos are then made on the device). Every image must be
    ``out_shape`` (H, W); a problem (missing, unreadable, wrong size) is returned as an
    ``error`` line rather than raised, so the main process can raise it as one clear
    :class:`PipelineError`."""

    def __init__(
        self,
        image_paths: Sequence[str | Path],
        sizes: Sequence[tuple[int, int]],
        out_shape: tuple[int, int] = FULL_SHAPE,
        mask_paths: Sequence[str | Path] | None = None,
        photos: bool = False,
        decode: str = "workers",
    ):
        if mask_paths is not None and len(mask_paths) != len(image_paths):
            raise ValueError("mask_paths must match image_paths one to one")
        self.image_paths = [str(p) for p in image_paths]
        self.mask_paths = None if mask_paths is None else [str(p) for p in mask_paths]
        self.sizes = [tuple(s) for s in sizes]
        self.out_shape = tuple(out_shape)
        self.photos = photos
        self.decode = check_decoder(decode)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> dict:
        path = self.image_paths[i]
        item = {"index": i, "name": Path(path).name, "images": {}, "mask": None, "photo": None,
                "jpeg": None, "error": ""}
        try:
            if self.decode == "device":
                item["jpeg"], shape = read_jpeg(path)
                _check_shape(path, shape, self.out_shape)
            else:
                image = read_image(path)
                _check_shape(path, image.shape[:2], self.out_shape)
                item["images"] = {s: torch.from_numpy(resize_image(image, *s))
                                  for s in self.sizes}
                if self.photos:
                    item["photo"] = torch.from_numpy(np.ascontiguousarray(image))
            if self.mask_paths is not None:
                mask = read_mask(self.mask_paths[i])
                _check_shape(self.mask_paths[i], mask.shape[:2], self.out_shape)
                item["mask"] = torch.from_numpy(np.array(mask, dtype=np.uint8))  # writable copy
        except PipelineError as exc:
            item["error"] = str(exc)
        return item


def _check_shape(path: str, shape: tuple[int, int], expected: tuple[int, int]) -> None:
    if tuple(shape) != tuple(expected):
        raise PipelineError(
            f"{path}: is {shape[1]}x{shape[0]} pixels, expected {expected[1]}x{expected[0]} "
            "like every other image of this set; replace the file (or predict it separately)"
        )


@dataclass
class Batch:
    """A collated batch: positions in the input list, file names, resized images per size,
    full-size masks (N x H x W uint8) and photos (N x H x W x 3 uint8) when asked for, the
    JPEG bytes instead of images and photos when decoding on the device, and the first error
    found."""

    indices: list[int]
    names: list[str]
    images: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    masks: torch.Tensor | None = None
    photos: torch.Tensor | None = None
    jpegs: list[torch.Tensor] | None = None
    error: str = ""

    def pin_memory(self) -> Batch:
        """Called by the DataLoader (``pin_memory=True``): page-locked tensors copy to the GPU
        asynchronously."""
        self.images = {s: t.pin_memory() for s, t in self.images.items()}
        if self.masks is not None:
            self.masks = self.masks.pin_memory()
        if self.photos is not None:
            self.photos = self.photos.pin_memory()
        return self


def collate(items: list[dict]) -> Batch:
    errors = [it["error"] for it in items if it["error"]]
    batch = Batch([it["index"] for it in items], [it["name"] for it in items])
    if errors:
        batch.error = errors[0]
        return batch
    for size in items[0]["images"]:
        batch.images[size] = torch.stack([it["images"][size] for it in items])
    if items[0]["mask"] is not None:
        batch.masks = torch.stack([it["mask"] for it in items])
    if items[0]["photo"] is not None:
        batch.photos = torch.stack([it["photo"] for it in items])
    if items[0]["jpeg"] is not None:
        batch.jpegs = [it["jpeg"] for it in items]
    return batch


def make_loader(dataset: Dataset, cfg: PredictConfig, device: torch.device) -> DataLoader:
    workers = max(0, cfg.num_workers)
    return DataLoader(
        dataset,
        batch_size=max(1, cfg.batch_size),
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
