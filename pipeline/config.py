"""One config object: nested dataclasses built from YAML files plus ``key=value`` overrides.

Layering, later wins: the dataclass defaults, then each YAML file in order (``configs/base.yaml``,
then e.g. ``configs/models/unet.yaml``), then command-line overrides such as
``train.epochs=3 model.encoder=resnet18``. A key that no dataclass declares is rejected with
one line naming the file and the closest valid keys, so a typo never silently does nothing.

Each stage receives only the section it needs (``cfg.train``, ``cfg.model``...). Nothing is
attached to the config at run time.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.typed import coerce, field_types

# Kaggle's image size: every prediction is returned at this shape (rows, columns).
FULL_HEIGHT = 1280
FULL_WIDTH = 1918
FULL_SHAPE = (FULL_HEIGHT, FULL_WIDTH)

# Field metadata of settings that change speed, memory or logging but never a result: DVC does
# not rerun a stage when only these change (dvc.yaml lists every other key).
RUNTIME = {"runtime": True}


def runtime(default: Any) -> Any:
    """A dataclass field for a runtime-only setting (see :data:`RUNTIME`)."""
    return field(default=default, metadata=RUNTIME)


def result_keys(cls: type) -> list[str]:
    """The fields of a config section that can change a result (every non-runtime field)."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("runtime")]


@dataclass
class DemoConfig:
    """Size of the synthetic dataset written by ``python -m pipeline.data --source demo``."""

    train_cars: int = 8
    test_cars: int = 4
    seed: int = 0
    height: int = FULL_HEIGHT
    width: int = FULL_WIDTH


@dataclass
class DataConfig:
    """Where the Kaggle-layout data lives and where resized copies are cached."""

    root: str = "data/carvana"  # folder in Kaggle layout (train/, train_masks/, ...)
    source: str = "demo"  # demo | kaggle | a directory in Kaggle layout
    cache_dir: str = runtime("data/cache")  # resized images and masks, keyed by size
    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass
class FoldsConfig:
    """Grouped K-fold split: all 16 angles of a car stay in one fold."""

    n_folds: int = 5
    seed: int = 42
    stratify: str = "make"  # make | area | none


@dataclass
class ModelConfig:
    """Which network to build. ``arch: unet`` is the hand-written U-Net; any other value is a
    segmentation-models-pytorch architecture name (Unet, UnetPlusPlus, FPN, DeepLabV3Plus,
    Linknet, Segformer, ...) built with ``encoder``."""

    arch: str = "unet"
    name: str = ""  # label for metrics and reports; defaults to arch[-encoder]
    classes: int = 1
    in_channels: int = 3
    # hand-written U-Net
    base_width: int = 64
    depth: int = 4
    batch_norm: bool = True
    skip: bool = True
    upsample: str = "transpose"  # transpose | bilinear
    kernel_size: int = 3
    # SMP
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # None: nothing is downloaded; "imagenet" needs internet
    pad_multiple: int = 32  # SMP inputs are reflect-padded to this multiple and cropped back
    # every BatchNorm's running-average momentum (PyTorch's convention); None: the model's own
    bn_momentum: float | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.arch if self.arch == "unet" else f"{self.arch}-{self.encoder}"


@dataclass
class TrainConfig:
    """Optimisation for one fold."""

    height: int = 320
    width: int = 480
    epochs: int = 10
    batch_size: int = 8
    num_workers: int = runtime(2)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adam | adamw
    scheduler: str = "cosine"  # cosine | plateau | warm_restarts | none
    warmup_epochs: float = 0.5
    min_lr: float = 1e-6
    restart_epochs: int = 5  # warm_restarts period
    loss: str = "bce_dice"  # bce_dice | bce | dice | lovasz | bce_log_dice | boundary_bce_dice
    bce_weight: float = 0.5
    boundary_weight: float = 3.0  # boundary_bce_dice: weight of the edge band
    boundary_kernel: int = 41  # boundary_bce_dice: band box width at a 1024 px input height
    precision: str = "auto"  # auto (the fastest native: pipeline.device) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the model in place; each new input shape compiles first
    sync_bn: bool = False  # DDP on GPUs: BatchNorm statistics over all ranks' batches
    grad_clip: float = 1.0
    accumulate: int = 1
    patience: int = 0  # early stopping in epochs; 0 disables
    full_res_val: bool = False  # validate at 1280x1918 by upsampling logits
    seed: int = 42
    max_steps: int = 0  # stop each epoch after this many steps (0: full epoch); for smoke runs
    augment: bool = True
    # training-engineer fields (pipeline/train.py, pipeline/data/dataset.py):
    plateau_patience: int = 2  # scheduler: plateau -- epochs without val Dice gain before lr cut
    plateau_factor: float = 0.5  # scheduler: plateau -- lr multiplier at each cut
    aug_hflip: float = 0.5  # probability of a horizontal flip
    aug_affine: float = 0.5  # probability of the small affine below
    aug_shift: float = 0.05  # affine shift, fraction of the image size
    aug_scale: float = 0.1  # affine zoom range 1 +- aug_scale
    aug_rotate: float = 5.0  # affine rotation range in degrees
    aug_color: float = 0.3  # probability of brightness/contrast and, separately, hue/saturation
    threads: int = runtime(0)  # torch CPU threads per process; 0: torch's default
    live: bool = runtime(True)  # per-epoch metrics and plots through DVCLive (dvclive/<model>/fold<K>)
    time_budget_min: float = 0.0  # >0: fit the epochs into this wall time (benchmark)
    ema: float = 0.0  # >0: validate and keep (best.pt) an exponential moving average, this decay
    init_from: str = ""  # a checkpoint whose weights start the run (progressive resizing)
    pseudo_root: str = ""  # pseudo-label folder (python -m pipeline.pseudo) added to training
    crop: list[int] = field(default_factory=list)  # [h, w]: random crops of the resized image
    # continuation phases (progressive resizing): each a mapping of the train keys that change,
    # trained from the previous phase's best.pt (pipeline.training.recipe checks the keys)
    progressive: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PredictConfig:
    """The inference engine shared by evaluation and submission."""

    batch_size: int = runtime(4)
    num_workers: int = runtime(2)
    tta: list[str] = field(default_factory=lambda: ["hflip"])  # subset of hflip, vflip
    threshold: float = 0.5
    largest_component: bool = False  # keep only each mask's largest connected region
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile each model in place; each new input shape compiles first
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead: CUDA graphs (COMPILE_MODES)
    refiner: bool = False  # apply the edge refiner saved beside each model (refiner.pt)
    decode: str = "workers"  # workers: OpenCV in DataLoader workers; device: batched on the device
    overlap: bool = runtime(True)  # RLE-encode batch i on a background thread while i+1 runs


@dataclass
class RefineConfig:
    """The full-resolution edge refiner: a small network on windows along the coarse mask's
    edge, trained on synthetic coarse inputs by ``python -m pipeline.refine --fold K`` or, with
    ``train: true``, by the train stage after the model (saved beside that fold's best.pt) and
    applied by ``predict.refiner=true``."""

    jitter: float = 0.15  # the coarse size: the run's training size x (1 +- jitter) per image
    patch: int = 96  # training window side (even)
    tile: int = 64  # apply: grid tile side; each tile on the edge is refined
    context: int = 16  # apply: px of photo around each tile; train: window border not scored
    band_margin: int = 8  # px around the undecided band that the refiner may change
    width: int = 16  # channels of the refiner's first level
    steps: int = 1500
    images_per_batch: int = 4
    patches_per_image: int = 8
    lr: float = 0.002
    outside_weight: float = 0.1  # loss weight of window pixels outside the band
    seed: int = 42
    log_every: int = runtime(50)
    num_workers: int = runtime(2)
    train: bool = False  # the train stage trains it after the model (refiner.pt beside best.pt)


@dataclass
class PseudoConfig:
    """Which predicted images become pseudo-labels (``python -m pipeline.pseudo``). With p the
    car probability averaged over TTA views and models, a pixel is uncertain when
    low < p < high; an image is kept when its mask (p > predict.threshold) is not empty and
    uncertain pixels / mask pixels <= max_uncertain."""

    max_uncertain: float = 0.02
    low: float = 0.1
    high: float = 0.9


@dataclass
class SubmitConfig:
    name: str = "submission"
    shard_every: int = runtime(1000)  # rows written between resume checkpoints
    stall_timeout_s: float = runtime(1800.0)  # torchrun: give up when other ranks' shards stall


@dataclass
class BenchmarkConfig:
    """What the DVC pipeline trains and compares (read by ``dvc.yaml`` only)."""

    # names of configs/models/<name>.yaml; the first one makes the submission
    models: list[str] = field(default_factory=lambda: ["unet_small"])
    folds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    # configs/profiles/<profile>.yaml, layered after configs/base.yaml by every stage
    profile: str = "demo"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


# --------------------------------------------------------------------------- building


def _merge(obj: Any, values: dict, source: str, prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``values`` merged in; reject unknown keys."""
    if not isinstance(values, dict):
        raise PipelineError(f"{source}: '{prefix or 'top level'}' must be a mapping")
    types_ = field_types(type(obj))
    changes = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in types_:
            close = difflib.get_close_matches(key, types_, n=3)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            valid = ", ".join(prefix + k for k in types_)
            raise PipelineError(
                f"{source}: unknown config key '{path}'{hint}; valid keys here: {valid}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, source, f"{path}.")
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


def load_config(
    paths: list[str | Path] | tuple = (), overrides: list[str] | tuple = ()
) -> Config:
    """Build the config from YAML files (in order) and ``key=value`` overrides."""
    cfg = Config()
    for path in paths:
        cfg = _merge(cfg, load_yaml(path), str(path))
    for text in overrides:
        cfg = _merge(cfg, parse_override(text), f"override '{text}'")
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (for checkpoints, JSON and YAML)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, values: dict, source: str = "checkpoint") -> Any:
    """Rebuild a config section (e.g. ``ModelConfig``) from ``to_dict`` output."""
    return _merge(cls(), values, source)


DEFAULT_CONFIGS = ("configs/base.yaml",)
MODELS_DIR = "configs/models"


def model_path(name: str) -> str:
    """``"unet_small"`` -> ``"configs/models/unet_small.yaml"``; a path is returned as given."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return name
    return f"{MODELS_DIR}/{name}.yaml"


def default_paths(model: str | None = None) -> list[str]:
    """``configs/base.yaml`` and, when given, the model config file."""
    paths: list[str] = [p for p in DEFAULT_CONFIGS if Path(p).is_file()]
    if model:
        paths.append(model)
    return paths


def cli_paths(config=None, model=None) -> list[str]:
    """The YAML files a stage CLI layers: the ``--config`` files (default
    ``configs/base.yaml``), then the ``--model`` file (a path, or a name in
    ``configs/models/``)."""
    paths = [str(p) for p in config] if config else default_paths()
    if model:
        paths.append(model_path(str(model)))
    return paths


def cli_config(config=None, model=None, overrides=None) -> Config:
    """The config every stage CLI builds: :func:`cli_paths`, then the trailing ``key=value``
    overrides."""
    return load_config(cli_paths(config, model), list(overrides or []))
