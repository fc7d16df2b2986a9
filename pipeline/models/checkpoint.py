"""Checkpoints that carry their own config, so prediction rebuilds the model from the file alone.

A checkpoint is a dict saved with ``torch.save``:

    format        1
    model_config  ModelConfig as a dict (enough to call build_model)
    config        the whole Config as a dict (training settings, image size, data paths)
    state_dict    model weights (never DDP-wrapped: no "module." prefixes)
    metrics       dict of floats, e.g. {"val_dice": 0.99}
    epoch         last completed epoch (0-based)
    train_state   optional: optimizer, schedule, scaler, RNG states, for --resume
    trained_on    the sorted names of every image whose label the weights have learnt from,
                  inherited through train.init_from, --resume and earlier phases: a consumer
                  that holds images out refuses weights that saw them
                  (pipeline.folds.splits.check_unseen)
    key           the run's resume key (pipeline.keys): its settings, training images and
                  starting weights; --resume and a resumed recipe refuse or redo another

Files are written to a temporary name and renamed, so a kill -9 never leaves half a checkpoint.
A model rebuilt from a checkpoint never downloads or reads pretrained encoder weights
(``model.encoder_weights``): its state_dict overwrites them anyway, and prediction must work
offline and after the weights file is gone.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.config import Config, ModelConfig, from_dict, to_dict
from pipeline.errors import PipelineError
from pipeline.models.factory import build_model, without_pretrained

FORMAT = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DistributedDataParallel / ``torch.compile(model)`` wrappers (a model
    compiled in place, ``model.compile()``, is its own bare model)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: Config,
    *,
    metrics: dict[str, float] | None = None,
    epoch: int = -1,
    train_state: dict[str, Any] | None = None,
    trained_on: Iterable[str] = (),
    key: str = "",
) -> Path:
    """Atomically write a checkpoint that rebuilds ``model`` without any other file."""
    payload = {
        "format": FORMAT,
        "model_config": to_dict(cfg.model),
        "config": to_dict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "metrics": dict(metrics or {}),
        "epoch": epoch,
        "trained_on": sorted(trained_on),
        "key": key,
    }
    if train_state is not None:
        payload["train_state"] = train_state
    # Serialised in memory, then written as plain bytes: on a full disk torch.save's own
    # writer fails with an obscure RuntimeError, a plain write with ENOSPC, which
    # atomic_path turns into one line while the previous checkpoint stays.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint dict; one clear line when the file is missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found; train first (python -m pipeline.train)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for a broken file
        raise PipelineError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "state_dict" not in ckpt:
        raise PipelineError(f"{path}: not a carvana-pipeline checkpoint (no model_config)")
    return ckpt


def checkpoint_config(ckpt: dict) -> Config:
    """The full Config stored in a checkpoint."""
    return from_dict(Config, ckpt["config"], source="checkpoint config", strict=False)


def model_config_of(ckpt: dict, source: str | Path = "checkpoint") -> ModelConfig:
    """The ModelConfig a checkpoint's weights belong to."""
    return from_dict(ModelConfig, ckpt["model_config"], source=f"{source} model_config")


def trained_on(ckpt: dict) -> frozenset[str] | None:
    """The images a checkpoint's weights learnt from (None: written before this was recorded)."""
    names = ckpt.get("trained_on")
    return None if names is None else frozenset(names)


def checkpoint_label(path: str | Path) -> str:
    """The model label (``model.name`` or arch[-encoder]) stored in a checkpoint."""
    return model_config_of(load_checkpoint(path), path).label


def model_skeleton(ckpt: dict, source: str | Path = "checkpoint") -> nn.Module:
    """The checkpoint's network, randomly initialised and built without pretrained weights
    (nothing downloaded or read): ready for ``load_state_dict(ckpt["state_dict"])``."""
    return build_model(without_pretrained(model_config_of(ckpt, source)))


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone and load its weights (eval mode)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    model = model_skeleton(ckpt, path)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt
