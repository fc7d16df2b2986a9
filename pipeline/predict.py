"""The inference engine shared by evaluation (``pipeline.evaluate``) and submission
(``pipeline.submit``).

Per batch of images:

1. DataLoader workers decode the JPEGs and resize them (``resize_image``: cv2 area averaging,
   the training cache's own resize) to every input size the ensemble needs, so the main
   process receives small uint8 tensors (N x h x w x 3) while the model runs.
2. On the device: ImageNet normalisation (the same arithmetic as
   :func:`pipeline.data.dataset.normalize`), channels_last and autocast when configured.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline import rle
from pipeline.config import FULL_HEIGHT, FULL_WIDTH, PredictConfig
from pipeline.errors import PipelineError

FULL_SHAPE = (FULL_HEIGHT, FULL_WIDTH)

# Flip TTA: name -> tensor dims flipped on an N x C x H x W batch. Flipping is its own inverse,
# so the same dims flip the prediction back.
TTA_DIMS = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# --------------------------------------------------------------------------- pure pieces


def tta_dims(tta: Sequence[str]) -> list[tuple[int, ...]]:
    """The views predicted per image: the identity ``()`` first, then one entry per flip."""
    unknown = [t for t in tta if t not in TTA_DIMS]
    if unknown:
        raise PipelineError(
            f"predict.tta: unknown transform(s) {unknown}; valid: {', '.join(TTA_DIMS)}"
        )
    return [()] + [TTA_DIMS[t] for t in dict.fromkeys(tta)]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``predict.precision`` on ``device`` (None: plain fp32).

    As training's :func:`~pipeline.training.loop.resolve_precision`, except that ``auto`` also
    uses bf16 on CPUs that compute it natively (AVX512-BF16 or AMX): inference there runs about
    twice as fast as in fp32, and the masks differ only in a few boundary pixels.
    """
    from pipeline.training.loop import resolve_precision

    if precision not in PRECISIONS:
        raise PipelineError(f"predict.precision must be one of {', '.join(PRECISIONS)}, "
                            f"got '{precision}'")
    if device.type != "cuda":
        if precision == "fp16":
            raise PipelineError("predict.precision=fp16 needs a CUDA GPU; use bf16 or fp32")
        if precision == "auto" and _cpu_has_bf16():
            precision = "bf16"
    return resolve_precision(precision, device).dtype


def _cpu_has_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> float32 N x 3 x H x W, ``(x / 255 - mean) / std``.

    The batched, on-device twin of :func:`pipeline.data.dataset.normalize` with the very same
    float32 constants. The result is a channels_last view (the permute of an NHWC tensor);
    callers make it contiguous when they do not want that layout.
    """
    from pipeline.data.dataset import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images.device) * 255.0
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images.device) * 255.0)
    x = (images.to(torch.float32) - mean) * inv_std  # N x H x W x 3
    return x.permute(0, 3, 1, 2)


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
    if largest_component:
        from pipeline.postprocess import largest_component as keep_largest

        masks = keep_largest(masks)
    return masks


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
    from pipeline.models.checkpoint import checkpoint_config, load_model

    if not checkpoints:
        raise PipelineError("no checkpoints to predict with; train first or pass --checkpoint")
    device = torch.device(device)
    cfg = cfg or PredictConfig()
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
    from pipeline.training.loop import Precision, autocast

    views = tta_dims(cfg.tta)
    total = None
    for size, members in ensemble.groups().items():
        if size not in images:
            raise ValueError(f"no batch resized to {size[0]}x{size[1]} for this ensemble")
        batch = images[size]
        dtype = resolve_dtype(cfg.precision, batch.device)
        x = normalize_batch(batch)
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        acc = torch.zeros((x.shape[0], *size), dtype=torch.float32, device=x.device)
        for member in members:
            for dims in views:
                view = x.flip(dims).contiguous(memory_format=layout) if dims else x
                with autocast(Precision(dtype), x.device):
                    logits = member.model(view)
                logits = logits[:, 0].float()  # N x h x w: class 0 is the car
                acc += torch.sigmoid(logits.flip([d - 1 for d in dims]) if dims else logits)
        # Sum of the group's probabilities at full size; divided by the total count below.
        group = upsample(acc, out_shape)
        total = group if total is None else total.add_(group)
    return total.div_(len(views) * len(ensemble.members))


# --------------------------------------------------------------------------- data loading


class ImageDataset(Dataset):
    """Reads one image (and optionally its mask) per item and resizes the image to each of
    ``sizes`` in the worker. Every image must be ``out_shape`` (H, W); a problem (missing,
    unreadable, wrong size) is returned as an ``error`` line rather than raised, so the main
    process can raise it as one clear :class:`PipelineError`."""

    def __init__(
        self,
        image_paths: Sequence[str | Path],
        sizes: Sequence[tuple[int, int]],
        out_shape: tuple[int, int] = FULL_SHAPE,
        mask_paths: Sequence[str | Path] | None = None,
    ):
        if mask_paths is not None and len(mask_paths) != len(image_paths):
            raise ValueError("mask_paths must match image_paths one to one")
        self.image_paths = [str(p) for p in image_paths]
        self.mask_paths = None if mask_paths is None else [str(p) for p in mask_paths]
        self.sizes = [tuple(s) for s in sizes]
        self.out_shape = tuple(out_shape)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> dict:
        from pipeline.data.dataset import resize_image
        from pipeline.data.io import read_image, read_mask

        path = self.image_paths[i]
        item = {"index": i, "name": Path(path).name, "images": {}, "mask": None, "error": ""}
        try:
            image = read_image(path)
            _check_shape(path, image.shape[:2], self.out_shape)
            item["images"] = {s: torch.from_numpy(resize_image(image, *s)) for s in self.sizes}
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
    full-size masks (N x H x W uint8) when asked for, and the first error found."""

    indices: list[int]
    names: list[str]
    images: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    masks: torch.Tensor | None = None
    error: str = ""

    def pin_memory(self) -> Batch:
        """Called by the DataLoader (``pin_memory=True``): page-locked tensors copy to the GPU
        asynchronously."""
        self.images = {s: t.pin_memory() for s, t in self.images.items()}
        if self.masks is not None:
            self.masks = self.masks.pin_memory()
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
    return batch


@dataclass
class Prediction:
    """One predicted batch: positions in the input list, names, probabilities N x H x W on the
    device, and the true masks N x H x W (uint8, on the device) when they were asked for."""

    indices: list[int]
    names: list[str]
    probs: torch.Tensor
    masks: torch.Tensor | None = None


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


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else the first CUDA GPU when there is one, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_shape(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header (the output shape of a prediction set)."""
    from pipeline.data.io import image_size

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: image not found")
    w, h = image_size(path)
    return h, w


# --------------------------------------------------------------------------- checkpoints


def fold_checkpoints(
    checkpoints_dir: str | Path, label: str, which: str = "best"
) -> dict[int, Path]:
    """``{fold: path}`` of ``<checkpoints_dir>/<label>/fold<K>/<which>.pt`` that exist, by fold.
    Fold -1 (``fold-1``, trained on every image) is included when present."""
    root = Path(checkpoints_dir) / label
    found = {}
    for path in root.glob(f"fold*/{which}.pt"):
        suffix = path.parent.name[len("fold"):]
        try:
            found[int(suffix)] = path
        except ValueError:
            continue
    return dict(sorted(found.items()))


def resolve_checkpoints(
    given: Sequence[str | Path] | None, checkpoints_dir: str | Path, label: str
) -> list[Path]:
    """The checkpoints named on the command line, else every fold's ``best.pt`` for ``label``."""
    if given:
        missing = [str(p) for p in given if not Path(p).is_file()]
        if missing:
            raise PipelineError(f"{missing[0]}: checkpoint not found; check --checkpoint")
        return [Path(p) for p in given]
    found = list(fold_checkpoints(checkpoints_dir, label).values())
    if not found:
        raise PipelineError(
            f"no checkpoints found at {Path(checkpoints_dir) / label}/fold*/best.pt; train first "
            "(python -m pipeline.train), pass --model for another model, or --checkpoint PATH"
        )
    return found


def checkpoint_label(path: str | Path) -> str:
    """The model label (``model.name`` or arch[-encoder]) stored in a checkpoint."""
    from pipeline.config import ModelConfig, from_dict
    from pipeline.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return from_dict(ModelConfig, ckpt["model_config"], source=f"{path} model_config").label


def fingerprint(paths: Sequence[str | Path], *extras) -> str:
    """A short hash of the checkpoint files' contents and ``extras`` (settings, names): two runs
    with equal fingerprints produce equal predictions."""
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    h.update(repr(extras).encode())
    return h.hexdigest()[:16]
