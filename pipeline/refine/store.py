"""Edge-refiner checkpoints: the weights with the settings that rebuild the network, read
back by the inference engine (``predict.refiner``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.atomic import atomic_path
from pipeline.config import RefineConfig, from_dict, to_dict
from pipeline.errors import PipelineError
from pipeline.refine.net import EdgeRefiner

KIND = "edge_refiner"


def save_refiner(path: str | Path, model: EdgeRefiner, cfg: RefineConfig, history: list) -> Path:
    """Atomically write a refiner checkpoint that rebuilds it without any other file."""
    payload = {"format": 1, "kind": KIND, "refine_config": to_dict(cfg), "history": history,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_refiner(path: str | Path, device: torch.device | str = "cpu") -> tuple[EdgeRefiner,
                                                                            RefineConfig]:
    """The refiner of a checkpoint written by :func:`save_refiner` (eval mode, on ``device``)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: refiner checkpoint not found; train one with "
                            "`python -m pipeline.refine` or set predict.refiner to ''")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for a broken file
        raise PipelineError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise PipelineError(f"{path}: not an edge-refiner checkpoint (pipeline.refine)")
    cfg = from_dict(RefineConfig, ckpt["refine_config"], source=f"{path} refine_config")
    model = EdgeRefiner(cfg.width)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg
