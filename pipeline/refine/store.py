"""Edge-refiner checkpoints: the weights with the settings that rebuild the network and the
images it learnt from, read back by the inference engine (``predict.refiner``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from pipeline.atomic import atomic_path
from pipeline.config import RefineConfig, from_dict, to_dict
from pipeline.errors import PipelineError
from pipeline.refine.net import EdgeRefiner
from pipeline.runs import refine_command

KIND = "edge_refiner"


def save_refiner(path: str | Path, model: EdgeRefiner, cfg: RefineConfig, history: list,
                 trained_on: Iterable[str] = (), coarse: tuple[int, int] | None = None,
                 source: str | None = None) -> Path:
    """Atomically write a refiner checkpoint that rebuilds it without any other file.
    ``trained_on``: the images whose masks it learnt from, ``coarse``: the input size (h, w) of
    the model it refines, ``source``: the resume key of that model's checkpoint and the
    refiner's settings (a resumed train stage keeps a refiner whose source is unchanged)."""
    payload = {"format": 1, "kind": KIND, "refine_config": to_dict(cfg), "history": history,
               "trained_on": sorted(trained_on),
               "coarse": None if coarse is None else list(coarse), "source": source,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_refiner(path: str | Path, device: torch.device | str = "cpu"
                 ) -> tuple[EdgeRefiner, RefineConfig, frozenset[str] | None]:
    """The refiner of a checkpoint written by :func:`save_refiner` (eval mode, on ``device``),
    its settings and the images it learnt from (None: not recorded)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: edge refiner not found; train it with "
                            f"`{refine_command(path)}` (and the model's -c files and "
                            "overrides) or set predict.refiner=false")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for a broken file
        raise PipelineError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise PipelineError(f"{path}: not an edge-refiner checkpoint (pipeline.refine)")
    cfg = from_dict(RefineConfig, ckpt["refine_config"], source=f"{path} refine_config")
    model = EdgeRefiner(cfg.width)
    model.load_state_dict(ckpt["state_dict"])
    seen = ckpt.get("trained_on")
    return model.to(device).eval(), cfg, None if seen is None else frozenset(seen)


def refiner_source(path: str | Path) -> str | None:
    """The ``source`` recorded in the refiner checkpoint at ``path``; None when there is no
    readable refiner there or it records none."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 -- missing or broken: nothing to keep
        return None
    return ckpt.get("source") if isinstance(ckpt, dict) and ckpt.get("kind") == KIND else None
