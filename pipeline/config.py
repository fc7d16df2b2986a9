"""One config object: nested dataclasses (each setting's type and meaning) filled from YAML.

Layering, later wins:

1. ``configs/base.yaml``: the one set of defaults. It holds every setting with its value and a
   comment; the dataclasses below declare types only, so no default is written twice.
2. the ``--config`` files in order, e.g. a profile (``configs/profiles/<name>.yaml``); a file
   may start with ``extends: <name>``, a file of the same folder layered first.
3. the ``--model`` file (``configs/models/<name>.yaml``, which may extend another model file).
4. ``section.key=value`` overrides.

A key that no dataclass declares is rejected with one line naming the file and the closest
valid keys, so a typo never silently does nothing. Field metadata marks the settings that only
change speed or logging (:func:`runtime`: DVC does not rerun a stage for them) and the training
settings a progressive phase may change (:func:`phase`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.typed import build, coerce, field_types

# Kaggle's image size: every prediction is returned at this shape (rows, columns).
FULL_HEIGHT = 1280
FULL_WIDTH = 1918
FULL_SHAPE = (FULL_HEIGHT, FULL_WIDTH)

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = REPO / "configs" / "base.yaml"
EXTENDS = "extends"


def runtime() -> Any:
    """A setting that changes speed, memory or logging but never a result: left out of
    ``dvc.yaml``'s params and of every resume key."""
    return field(metadata={"runtime": True})


def phase() -> Any:
    """A training setting that a phase of ``train.progressive`` may change."""
    return field(metadata={"phase": True})


def result_keys(cls: type) -> list[str]:
    """The fields of a config section that can change a result (every non-runtime field)."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("runtime")]


def phase_keys(cls: type) -> list[str]:
    """The fields a progressive phase may change (:func:`phase`)."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("phase")]


@dataclass
class DemoConfig:
    """Size of the synthetic dataset written by ``python -m pipeline.data --source demo``."""

    train_cars: int
    test_cars: int
    seed: int
    height: int
    width: int


@dataclass
class DataConfig:
    """Where the Kaggle-layout data lives and where resized copies are cached."""

    root: str  # folder in Kaggle layout (train/, train_masks/, ...)
    source: str  # demo | kaggle | a directory in Kaggle layout
    cache_dir: str = runtime()  # resized images and masks, keyed by size and source
    demo: DemoConfig


@dataclass
class FoldsConfig:
    """Grouped K-fold split: all 16 angles of a car stay in one fold."""

    n_folds: int
    seed: int
    stratify: str  # make | none


@dataclass
class ModelConfig:
    """Which network to build. ``arch: unet`` is the hand-written U-Net; any other value is a
    segmentation-models-pytorch architecture name (Unet, UnetPlusPlus, FPN, DeepLabV3Plus,
    Linknet, Segformer, ...) built with ``encoder``."""

    arch: str
    name: str  # label for checkpoints, metrics and reports; "" -> arch[-encoder]
    classes: int
    in_channels: int
    # hand-written U-Net
    base_width: int
    depth: int
    batch_norm: bool
    skip: bool
    upsample: str  # transpose | bilinear
    kernel_size: int
    # SMP
    encoder: str
    encoder_weights: str | None  # None: nothing is downloaded; a path: a local state_dict
    pad_multiple: int  # SMP inputs are reflect-padded to this multiple and cropped back
    bn_momentum: float | None  # every BatchNorm's momentum (PyTorch's convention); None: own

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.arch if self.arch == "unet" else f"{self.arch}-{self.encoder}"


@dataclass
class TrainConfig:
    """Optimisation for one fold (AdamW, cosine decay after a linear warm-up)."""

    height: int = phase()
    width: int = phase()
    crop: list[int] = phase()  # noqa: RUF009 -- [h, w]: random crops of the image; []: off
    epochs: int = phase()
    batch_size: int = phase()
    accumulate: int = phase()
    lr: float = phase()
    weight_decay: float = phase()
    warmup_epochs: float = phase()
    min_lr: float = phase()
    loss: str = phase()  # bce_dice | boundary_bce_dice
    bce_weight: float = phase()
    boundary_weight: float = phase()  # boundary_bce_dice: weight of the edge band
    boundary_kernel: int = phase()  # boundary_bce_dice: band box width at a 1024 px input height
    grad_clip: float = phase()
    ema: float = phase()  # >0: validate and keep (best.pt) a moving average, this decay
    full_res_val: bool = phase()  # validate at 1280x1918 by upsampling logits
    max_steps: int = phase()  # stop each epoch after this many batches (0: full epoch)
    time_budget_min: float = phase()  # >0: fit the epochs into this wall time (benchmarks)
    augment: bool = phase()
    aug_hflip: float = phase()  # probability of a horizontal flip
    aug_affine: float = phase()  # probability of the small affine below
    aug_shift: float = phase()  # affine shift, fraction of the image size
    aug_scale: float = phase()  # affine zoom range 1 +- aug_scale
    aug_rotate: float = phase()  # affine rotation range in degrees
    aug_color: float = phase()  # probability of brightness/contrast and, apart, hue/saturation
    precision: str  # auto (the fastest native: pipeline.device) | fp32 | bf16 | fp16
    channels_last: bool
    compile: bool  # torch.compile the model in place; each new input shape compiles first
    seed: int
    init_from: str  # a checkpoint whose weights start the run
    # continuation phases (progressive resizing): each a mapping of the phase keys that change,
    # trained from the previous phase's best.pt (pipeline.train.recipe)
    progressive: list[dict[str, Any]]
    num_workers: int = runtime()
    threads: int = runtime()  # torch CPU threads per process; 0: torch's default
    live: bool = runtime()  # per-epoch metrics and plots through DVCLive


@dataclass
class PredictConfig:
    """The inference engine shared by evaluation, submission and the overlays."""

    tta: list[str]  # [hflip] or []: the horizontally flipped view, flipped back and averaged
    threshold: float
    largest_component: bool  # keep only each mask's largest connected region
    precision: str
    channels_last: bool
    compile: bool  # torch.compile each model in place; each new input shape compiles first
    compile_mode: str  # torch.compile mode; reduce-overhead: CUDA graphs
    refiner: bool  # apply the edge refiner saved beside each model (refiner.pt)
    decode: str  # workers: OpenCV in DataLoader workers; device: batched on the device
    batch_size: int = runtime()
    num_workers: int = runtime()
    overlap: bool = runtime()  # RLE-encode batch i on a background thread while i+1 runs


@dataclass
class RefineConfig:
    """The full-resolution edge refiner (:mod:`pipeline.refine`), trained on fold K's training
    images and saved beside that fold's best.pt; applied by ``predict.refiner=true``."""

    train: bool  # the train stage trains it after the model (refiner.pt beside best.pt)
    jitter: float  # the coarse size: the run's training size x (1 +- jitter) per image
    patch: int  # training window side (even)
    tile: int  # apply: grid tile side; each tile on the edge is refined
    context: int  # apply: px of photo around each tile; train: window border not scored
    band_margin: int  # px around the undecided band that the refiner may change
    width: int  # channels of the refiner's first level
    steps: int
    images_per_batch: int
    patches_per_image: int
    lr: float
    outside_weight: float  # loss weight of window pixels outside the band
    seed: int
    log_every: int = runtime()
    num_workers: int = runtime()


@dataclass
class SubmitConfig:
    name: str
    shard_every: int = runtime()  # rows written between resume checkpoints
    stall_timeout_s: float = runtime()  # torchrun: give up when other ranks' shards stall


@dataclass
class ReproConfig:
    """What ``dvc repro`` trains and compares (read by ``dvc.yaml`` only)."""

    models: list[str]  # names of configs/models/<name>.yaml; the first one submits
    folds: list[int]
    profile: str  # configs/profiles/<profile>.yaml, layered after configs/base.yaml


@dataclass
class Config:
    data: DataConfig
    folds: FoldsConfig
    model: ModelConfig
    train: TrainConfig
    predict: PredictConfig
    refine: RefineConfig
    submit: SubmitConfig
    repro: ReproConfig


# --------------------------------------------------------------------------- building


def _merge(obj: Any, values: dict, source: str, prefix: str = "", strict: bool = True) -> Any:
    """A copy of dataclass ``obj`` with ``values`` merged in. An unknown key is an error, or,
    with ``strict=False`` (a config stored by older code), left out."""
    if not isinstance(values, dict):
        raise PipelineError(f"{source}: '{prefix or 'top level'}' must be a mapping")
    types_ = field_types(type(obj))
    changes = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in types_:
            if not strict:
                continue
            close = difflib.get_close_matches(key, types_, n=3)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            valid = ", ".join(prefix + k for k in types_)
            raise PipelineError(
                f"{source}: unknown config key '{path}'{hint}; valid keys here: {valid}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, source, f"{path}.", strict)
        else:
            changes[key] = coerce(value, types_[key], f"{source}: {path}")
    return dataclasses.replace(obj, **changes)


def parse_override(text: str) -> dict:
    """``"train.lr=1e-3"`` -> ``{"train": {"lr": 0.001}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise PipelineError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    nested: dict = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_yaml(path: str | Path) -> dict:
    """One YAML file's mapping, ``extends`` included as written."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise PipelineError(f"{path}: top level must be a mapping of sections")
    return values


def layers(path: str | Path, seen: tuple = ()) -> list[tuple[Path, dict]]:
    """``(file, its own values)`` of ``path`` and of every file it extends, parents first.
    ``extends: <name>`` names ``<name>.yaml`` in the same folder."""
    path = Path(path)
    if path.resolve() in seen:
        raise PipelineError(f"{path}: 'extends' loops back to itself")
    values = load_yaml(path)
    parent = values.pop(EXTENDS, None)
    if parent is None:
        return [(path, values)]
    if not isinstance(parent, str) or not parent:
        raise PipelineError(f"{path}: 'extends' must name a file of {path.parent}/")
    parent_path = path.parent / (parent if parent.endswith(".yaml") else f"{parent}.yaml")
    if not parent_path.is_file():
        raise PipelineError(f"{path}: extends '{parent}', but {parent_path} does not exist")
    return layers(parent_path, (*seen, path.resolve())) + [(path, values)]


@functools.cache
def _defaults(path: Path, mtime_ns: int) -> Config:
    return build(Config, load_yaml(path), f"{path} (the defaults: every setting, once)")


def defaults() -> Config:
    """Every setting at its value in ``configs/base.yaml`` (a missing or unknown key there is
    one error line)."""
    if not DEFAULTS.is_file():
        raise PipelineError(f"{DEFAULTS}: the defaults file is missing; restore it from git")
    return _defaults(DEFAULTS, DEFAULTS.stat().st_mtime_ns)


def load_config(paths: list[str | Path] | tuple = (), overrides: list[str] | tuple = (),
                base: Config | None = None) -> Config:
    """The defaults (or ``base``), then the YAML files in order (each after the files it
    extends), then the ``key=value`` overrides."""
    cfg = base or defaults()
    for path in paths:
        if Path(path).resolve() == DEFAULTS:
            continue  # already the starting point
        for source, values in layers(path):
            cfg = _merge(cfg, values, str(source))
    for text in overrides:
        cfg = _merge(cfg, parse_override(text), f"override '{text}'")
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (for checkpoints, JSON and YAML)."""
    return dataclasses.asdict(cfg)


def default(cls: type, **changes: Any) -> Any:
    """A config section (``TrainConfig``...) or the whole ``Config`` at its defaults, with
    ``changes`` (keyword arguments, as ``dataclasses.replace`` takes them)."""
    return dataclasses.replace(_section(defaults(), cls), **changes)


def _section(obj: Any, cls: type) -> Any:
    """The part of config ``obj`` of type ``cls`` (``obj`` itself, or a nested section)."""
    if isinstance(obj, cls):
        return obj
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and (found := _section(value, cls)) is not None:
            return found
    return None


def from_dict(cls: type, values: dict, source: str = "checkpoint", strict: bool = True) -> Any:
    """A config section (e.g. ``ModelConfig``) or the whole ``Config`` rebuilt from ``to_dict``
    output: the defaults with ``values`` merged in. ``strict=False`` (a whole config stored by
    older code) leaves out the keys this code no longer has."""
    return _merge(default(cls), values, source, strict=strict)


def model_path(name: str) -> str:
    """``"unet_small"`` -> ``"configs/models/unet_small.yaml"``; a path is returned as given."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return name
    return f"configs/models/{name}.yaml"
