"""The inference engine shared by evaluation, submission and the overlays.

Per batch of images:

1. DataLoader workers decode the JPEGs and resize them (``resize_image``: cv2 area averaging,
   the training cache's own resize) to every input size the ensemble needs, so the main
   process receives small uint8 tensors (N x h x w x 3) while the model runs. With
   ``predict.decode: device`` the workers only read the files' bytes, and the batch is decoded
   and resized on the device (:mod:`pipeline.inference.decode`; nvJPEG on a GPU).
2. On the device: ImageNet normalisation (:func:`pipeline.data.transforms.normalize_batch`),
   channels_last and autocast in the precision resolved once for the run (:class:`Engine`).
3. Each model runs on the batch and, with ``predict.tta: [hflip]``, on its mirror image, whose
   prediction is flipped back, so all maps are in the original orientation.
4. **Probabilities** (sigmoid of the logits) are averaged over flips and models: a mean of
   probabilities is the usual ensemble, a mean of logits would weight confident models more.
5. The mean probability of each input-size group is upsampled bilinearly
   (``align_corners=False``) to the output shape, 1280 x 1918 by default. Upsampling is
   linear, so upsampling the average equals averaging the upsampled maps: it runs once per
   size group instead of once per flip and model.
6. With ``predict.refiner``, each member's edge refiner (``refiner.pt`` beside its checkpoint,
   ``python -m pipeline.refine``) redraws the averaged full-size probabilities along the mask's
   edge from the full-size photo (:func:`pipeline.refine.apply.refine_probs`), and the
   refiners' results are averaged: the same mean-of-probabilities rule as the models. Pixels
   off the edge band keep the ensemble's probability.
7. ``probs > threshold`` gives the masks (with ``largest_component``, only each one's largest
   region): :func:`to_masks` on the device for scoring, or straight to RLE strings by
   :mod:`pipeline.inference.encode`, where only the runs of each image row reach the host, on
   a background thread that overlaps the next batch (``predict.overlap``).

Memory stays flat however many images are predicted: :func:`iter_predictions` yields one batch
at a time and keeps nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.config import FULL_SHAPE, PredictConfig, RefineConfig
from pipeline.data.transforms import normalize_batch
from pipeline.device import (
    Precision,
    autocast,
    compile_model,
    enable_fast_kernels,
    resolve_precision,
)
from pipeline.errors import PipelineError
from pipeline.inference.decode import check_decoder, decode_batch, resize_batch
from pipeline.inference.loader import Batch, ImageDataset, make_loader
from pipeline.keys import code_version, output_key, result_settings
from pipeline.models.checkpoint import checkpoint_config, load_model, trained_on
from pipeline.postprocess import largest_component as keep_largest
from pipeline.refine.apply import refine_probs
from pipeline.refine.net import EdgeRefiner
from pipeline.refine.store import load_refiner
from pipeline.runs import refiner_beside

# Flip TTA: name -> tensor dims flipped on an N x C x H x W batch. Flipping is its own inverse,
# so the same dims flip the prediction back. (A car is never seen upside down: no vflip.)
TTA_DIMS = {"hflip": (3,)}

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


# --------------------------------------------------------------------------- the ensemble


@dataclass(frozen=True)
class Engine:
    """The prediction settings of one run, resolved once for its device: the precision, the
    TTA views, and every setting that changes a prediction (:meth:`settings`)."""

    cfg: PredictConfig
    device: torch.device
    precision: Precision
    views: tuple[tuple[int, ...], ...]

    def settings(self) -> dict:
        """Every result setting of ``predict``, the precision resolved, and the device type:
        what a score records and what every resume key covers."""
        return result_settings(self.cfg, precision=self.precision.name,
                               device=self.device.type)


def prepare_engine(cfg: PredictConfig, device: torch.device | str = "cpu", *,
                   announce: bool = True) -> Engine:
    """Resolve ``cfg`` for ``device`` (once per run); ``announce`` prints the one warning
    line for bf16 on hardware that only emulates it (rank 0 of several processes)."""
    device = torch.device(device)
    precision = resolve_precision(cfg.precision, device, what="predict.precision")
    check_decoder(cfg.decode)
    if announce and precision.warning:
        print(precision.warning, file=sys.stderr, flush=True)
    return Engine(cfg, device, precision, tuple(tta_dims(cfg.tta)))


@dataclass
class Member:
    """One model of an ensemble, the (height, width) it was trained at, its edge refiner with
    that refiner's settings when ``predict.refiner`` is on, and the images whose labels the
    two were trained on (None: not recorded)."""

    model: nn.Module
    size: tuple[int, int]
    source: str = ""
    refiner: EdgeRefiner | None = None
    refine: RefineConfig | None = None
    trained_on: frozenset[str] | None = None


@dataclass
class Ensemble:
    """Models whose probabilities are averaged (their input sizes may differ), the engine they
    run in, and ``key``: a hash of every file they come from and of the engine's settings."""

    members: list[Member]
    engine: Engine
    key: str = ""

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Distinct input sizes, in first-seen order (what the workers resize to)."""
        return list(dict.fromkeys(m.size for m in self.members))

    @property
    def refined(self) -> bool:
        """Whether the full-size photos are needed: some member has an edge refiner."""
        return any(m.refiner is not None for m in self.members)

    @property
    def files(self) -> list[str]:
        """Every file the predictions come from: checkpoints, then refiners."""
        return ([m.source for m in self.members]
                + [str(refiner_beside(m.source)) for m in self.members if m.refiner is not None])

    def groups(self) -> dict[tuple[int, int], list[Member]]:
        out: dict[tuple[int, int], list[Member]] = {}
        for m in self.members:
            out.setdefault(m.size, []).append(m)
        return out


def load_ensemble(checkpoints: Sequence[str | Path], engine: Engine) -> Ensemble:
    """Rebuild each checkpoint's model (eval mode, on the engine's device) with the input size
    it was trained at (``train.height`` x ``train.width`` of its stored config); compiled in
    place with ``predict.compile``; with ``predict.refiner``, the ``refiner.pt`` beside each
    checkpoint too. On a GPU, cuDNN picks its fastest kernels per input shape."""
    if not checkpoints:
        raise PipelineError("no checkpoints to predict with; train first or pass --checkpoint")
    cfg, device = engine.cfg, engine.device
    enable_fast_kernels(device)
    members = []
    for path in checkpoints:
        model, ckpt = load_model(path, map_location=device)
        train = checkpoint_config(ckpt).train
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            compile_model(model, cfg.compile_mode)
        seen = trained_on(ckpt)
        refiner, refine = None, None
        if cfg.refiner:
            refiner, refine, refiner_seen = load_refiner(refiner_beside(path), device)
            seen = None if seen is None or refiner_seen is None else seen | refiner_seen
        members.append(Member(model.eval(), (train.height, train.width), str(path), refiner,
                              refine, seen))
    ensemble = Ensemble(members, engine)
    ensemble.key = output_key(ensemble.files, engine.settings(), code_version())
    return ensemble


@torch.inference_mode()
def predict_probs(
    ensemble: Ensemble,
    images: dict[tuple[int, int], torch.Tensor],
    out_shape: tuple[int, int] = FULL_SHAPE,
    photos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Averaged car probabilities, float32 N x H x W on the images' device.

    ``images`` maps each input size of the ensemble (``ensemble.sizes``) to the batch resized
    to it: uint8 N x h x w x 3 RGB. Every model sees its own size; each TTA view is predicted
    and flipped back; probabilities are averaged over views and models, upsampled per size
    group, then averaged over groups weighted by their model count. An ensemble with edge
    refiners also needs ``photos``, the batch at ``out_shape`` (uint8 N x H x W x 3): see
    :func:`refine_ensemble`.
    """
    engine = ensemble.engine
    cfg, views = engine.cfg, engine.views
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    total = None
    for size, members in ensemble.groups().items():
        if size not in images:
            raise ValueError(f"no batch resized to {size[0]}x{size[1]} for this ensemble")
        x = normalize_batch(images[size]).contiguous(memory_format=layout)
        acc = torch.zeros((x.shape[0], *size), dtype=torch.float32, device=x.device)
        for member in members:
            for dims in views:
                view = x.flip(dims).contiguous(memory_format=layout) if dims else x
                if cfg.compile:
                    # CUDA graphs (compile_mode reduce-overhead) reuse their output memory on
                    # the next replay: each output is used up (sigmoid into acc) before it.
                    torch.compiler.cudagraph_mark_step_begin()
                with autocast(engine.precision, x.device):
                    logits = member.model(view)
                logits = logits[:, 0].float()  # N x h x w: class 0 is the car
                acc += torch.sigmoid(logits.flip([d - 1 for d in dims]) if dims else logits)
        # Sum of the group's probabilities at full size; divided by the total count below.
        group = upsample(acc, out_shape)
        total = group if total is None else total.add_(group)
    probs = total.div_(len(views) * len(ensemble.members))
    return refine_ensemble(ensemble, probs, photos) if ensemble.refined else probs


def refine_ensemble(ensemble: Ensemble, probs: torch.Tensor,
                    photos: torch.Tensor | None) -> torch.Tensor:
    """The ensemble's full-size ``probs`` redrawn along their edges by each member's refiner
    from ``photos`` (uint8 N x H x W x 3), averaged over the refiners."""
    if photos is None or tuple(photos.shape[1:3]) != tuple(probs.shape[1:]):
        raise ValueError("an ensemble with edge refiners needs the photos at the output size")
    refined = [refine_probs(m.refiner, m.refine, photos, probs, ensemble.engine.precision)
               for m in ensemble.members if m.refiner is not None]
    return torch.stack(refined).mean(0) if len(refined) > 1 else refined[0]


def batch_on_device(batch: Batch, sizes: Sequence[tuple[int, int]], photos: bool,
                    device: torch.device
                    ) -> tuple[dict[tuple[int, int], torch.Tensor], torch.Tensor | None]:
    """The batch's images at each of ``sizes`` and, with ``photos`` (edge refiners), its
    full-size photos, on ``device``: copied there, or decoded and resized there when the
    workers sent JPEG bytes (``predict.decode: device``)."""
    if batch.jpegs is None:
        images = {s: t.to(device, non_blocking=True) for s, t in batch.images.items()}
        full = batch.photos  # full size, only for edge refiners
        return images, None if full is None else full.to(device, non_blocking=True)
    full = decode_batch(batch.jpegs, device, batch.names)
    return {s: resize_batch(full, *s) for s in sizes}, full if photos else None


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
    engine = ensemble.engine
    dataset = ImageDataset(image_paths, ensemble.sizes, out_shape, mask_paths,
                           photos=ensemble.refined, decode=engine.cfg.decode)
    loader = make_loader(dataset, engine.cfg, engine.device)
    desc = progress if isinstance(progress, str) else "predict"
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, smoothing=0.1)
    try:
        for batch in loader:
            if batch.error:
                raise PipelineError(batch.error)
            images, photos = batch_on_device(batch, ensemble.sizes, ensemble.refined,
                                             engine.device)
            probs = predict_probs(ensemble, images, out_shape, photos)
            masks = None if batch.masks is None else batch.masks.to(engine.device,
                                                                    non_blocking=True)
            yield Prediction(batch.indices, batch.names, probs, masks)
            bar.update(len(batch.names))
    finally:
        bar.close()
