"""The inference engine shared by evaluation, submission, pseudo-labels and the overlays.

Per batch of images:

1. DataLoader workers decode the JPEGs and resize them (``resize_image``: cv2 area averaging,
   the training cache's own resize) to every input size the ensemble needs, so the main
   process receives small uint8 tensors (N x h x w x 3) while the model runs.
2. On the device: ImageNet normalisation (:func:`pipeline.data.transforms.normalize_batch`),
   channels_last and autocast (:mod:`pipeline.device`) when configured.
3. Each model runs on the batch and on each flipped copy (``predict.tta``); every flipped
   prediction is flipped back, so all maps are in the original orientation.
4. **Probabilities** (sigmoid of the logits) are averaged over flips and models: a mean of
   probabilities is the usual ensemble, a mean of logits would weight confident models more.
5. The mean probability of each input-size group is upsampled bilinearly
   (``align_corners=False``) to the output shape, 1280 x 1918 by default. Upsampling is
   linear, so upsampling the average equals averaging the upsampled maps: it runs once per
   size group instead of once per flip and model.
6. ``probs > threshold`` gives the masks (with ``largest_component``, only each one's largest
   region); :func:`masks_to_rle` encodes them on the device and only the run boundaries come
   back to the CPU.

Memory stays flat however many images are predicted: :func:`iter_predictions` yields one batch
at a time and keeps nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import rle
from pipeline.config import FULL_SHAPE, PredictConfig
from pipeline.data.transforms import normalize_batch
from pipeline.device import autocast, resolve_precision
from pipeline.errors import PipelineError
from pipeline.inference.loader import ImageDataset, make_loader
from pipeline.models.checkpoint import checkpoint_config, load_model
from pipeline.postprocess import largest_component as keep_largest

# Flip TTA: name -> tensor dims flipped on an N x C x H x W batch. Flipping is its own inverse,
# so the same dims flip the prediction back.
TTA_DIMS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}

# --------------------------------------------------------------------------- pure pieces


def tta_dims(tta: Sequence[str]) -> list[tuple[int, ...]]:
    """The views predicted per image: the identity ``()`` first, then one entry per flip."""
    unknown = [t for t in tta if t not in TTA_DIMS]
    if unknown:
        raise PipelineError(
            f"predict.tta: unknown transform(s) {unknown}; valid: {', '.join(TTA_DIMS)}"
        )
    return [()] + [TTA_DIMS[t] for t in dict.fromkeys(tta)]


def upsample(probs: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """N x h x w probabilities -> N x H x W, bilinear with ``align_corners=False`` (pixel
    centres, as cv2.INTER_LINEAR)."""
    if tuple(probs.shape[-2:]) == tuple(out_shape):
        return probs
    return F.interpolate(
        probs[:, None], size=tuple(out_shape), mode="bilinear", align_corners=False
    )[:, 0]


def to_masks(probs: torch.Tensor, threshold: float = 0.5,
             largest_component: bool = False) -> torch.Tensor:
    """N x H x W probabilities -> bool masks ``probs > threshold``; with ``largest_component``
    each mask keeps only its largest connected region (:mod:`pipeline.postprocess`)."""
    masks = probs > threshold
    return keep_largest(masks) if largest_component else masks


def masks_to_rle(probs: torch.Tensor, threshold: float = 0.5,
                 largest_component: bool = False) -> list[str]:
    """N x H x W probabilities on any device -> N Kaggle RLE strings of :func:`to_masks`
    (row-major, 1-based starts; only run boundaries leave the device)."""
    return rle.encode_torch(to_masks(probs, threshold, largest_component))


# --------------------------------------------------------------------------- the ensemble


@dataclass
class Member:
    """One model of an ensemble and the (height, width) it was trained at."""

    model: nn.Module
    size: tuple[int, int]
    source: str = ""


@dataclass
class Ensemble:
    """Models whose probabilities are averaged; their input sizes may differ."""

    members: list[Member]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Distinct input sizes, in first-seen order (what the workers resize to)."""
        return list(dict.fromkeys(m.size for m in self.members))

    def groups(self) -> dict[tuple[int, int], list[Member]]:
        out: dict[tuple[int, int], list[Member]] = {}
        for m in self.members:
            out.setdefault(m.size, []).append(m)
        return out


def load_ensemble(
    checkpoints: Sequence[str | Path],
    device: torch.device | str = "cpu",
    cfg: PredictConfig | None = None,
) -> Ensemble:
    """Rebuild each checkpoint's model (eval mode, on ``device``) with the input size it was
    trained at (``train.height`` x ``train.width`` of its stored config)."""
    if not checkpoints:
        raise PipelineError("no checkpoints to predict with; train first or pass --checkpoint")
    device = torch.device(device)
    cfg = cfg or PredictConfig()
    if cfg.refiner:
        raise PipelineError("predict.refiner=true: the edge refiner is not wired into "
                            "prediction yet (pipeline/refine); set predict.refiner=false")
    members = []
    for path in checkpoints:
        model, ckpt = load_model(path, map_location=device)
        train = checkpoint_config(ckpt).train
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        members.append(Member(model.eval(), (train.height, train.width), str(path)))
    return Ensemble(members)


@torch.inference_mode()
def predict_probs(
    ensemble: Ensemble,
    images: dict[tuple[int, int], torch.Tensor],
    cfg: PredictConfig,
    out_shape: tuple[int, int] = FULL_SHAPE,
) -> torch.Tensor:
    """Averaged car probabilities, float32 N x H x W on the images' device.

    ``images`` maps each input size of the ensemble (``ensemble.sizes``) to the batch resized
    to it: uint8 N x h x w x 3 RGB. Every model sees its own size; each view of
    ``cfg.tta`` is predicted and flipped back; probabilities are averaged over views and
    models, upsampled per size group, then averaged over groups weighted by their model count.
    """
    views = tta_dims(cfg.tta)
    total = None
    for size, members in ensemble.groups().items():
        if size not in images:
            raise ValueError(f"no batch resized to {size[0]}x{size[1]} for this ensemble")
        batch = images[size]
        precision = resolve_precision(cfg.precision, batch.device, what="predict.precision")
        x = normalize_batch(batch)
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        acc = torch.zeros((x.shape[0], *size), dtype=torch.float32, device=x.device)
        for member in members:
            for dims in views:
                view = x.flip(dims).contiguous(memory_format=layout) if dims else x
                with autocast(precision, x.device):
                    logits = member.model(view)
                logits = logits[:, 0].float()  # N x h x w: class 0 is the car
                acc += torch.sigmoid(logits.flip([d - 1 for d in dims]) if dims else logits)
        # Sum of the group's probabilities at full size; divided by the total count below.
        group = upsample(acc, out_shape)
        total = group if total is None else total.add_(group)
    return total.div_(len(views) * len(ensemble.members))


@dataclass
class Prediction:
    """One predicted batch: positions in the input list, names, probabilities N x H x W on the
    device, and the true masks N x H x W (uint8, on the device) when they were asked for."""

    indices: list[int]
    names: list[str]
    probs: torch.Tensor
    masks: torch.Tensor | None = None


def iter_predictions(
    ensemble: Ensemble,
    image_paths: Sequence[str | Path],
    cfg: PredictConfig,
    device: torch.device | str = "cpu",
    out_shape: tuple[int, int] = FULL_SHAPE,
    mask_paths: Sequence[str | Path] | None = None,
    progress: bool | str = False,
) -> Iterator[Prediction]:
    """Predict ``image_paths`` in order, one :class:`Prediction` batch at a time.

    Workers decode and resize while the model runs; nothing is kept between batches, so memory
    does not grow with the number of images. A missing, unreadable or wrongly sized image
    raises :class:`PipelineError` naming the file, after every earlier batch was yielded.
    ``progress``: False, True or a tqdm description.
    """
    device = torch.device(device)
    dataset = ImageDataset(image_paths, ensemble.sizes, out_shape, mask_paths)
    loader = make_loader(dataset, cfg, device)
    desc = progress if isinstance(progress, str) else "predict"
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, smoothing=0.1)
    try:
        for batch in loader:
            if batch.error:
                raise PipelineError(batch.error)
            images = {s: t.to(device, non_blocking=True) for s, t in batch.images.items()}
            probs = predict_probs(ensemble, images, cfg, out_shape)
            masks = None if batch.masks is None else batch.masks.to(device, non_blocking=True)
            yield Prediction(batch.indices, batch.names, probs, masks)
            bar.update(len(batch.names))
    finally:
        bar.close()


