"""Edge-refiner checkpoints: the weights with the settings that rebuild the network and the
split it was trained on, read back by the inference engine (``predict.refiner``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.atomic import atomic_path
from pipeline.config import RefineConfig, from_dict, to_dict
from pipeline.errors import PipelineError
from pipeline.refine.net import EdgeRefiner
from pipeline.runs import refine_command

KIND = "edge_refiner"


def save_refiner(path: str | Path, model: EdgeRefiner, cfg: RefineConfig, history: list,
                 split: dict | None = None, coarse: tuple[int, int] | None = None,
                 source: str | None = None) -> Path:
    """Atomically write a refiner checkpoint that rebuilds it without any other file.
    ``split``: the split record of the model it refines (``pipeline.data.splits.split_id``),
    ``coarse``: that model's input size (h, w), ``source``: the fingerprint of that model's
    checkpoint and the refiner's settings (a resumed train stage keeps a refiner whose source
    is unchanged)."""
    payload = {"format": 1, "kind": KIND, "refine_config": to_dict(cfg), "history": history,
               "split": split, "coarse": None if coarse is None else list(coarse),
               "source": source,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_refiner(path: str | Path, device: torch.device | str = "cpu",
                 split: dict | None = None) -> tuple[EdgeRefiner, RefineConfig]:
    """The refiner of a checkpoint written by :func:`save_refiner` (eval mode, on ``device``).
    ``split``: the split record of the model it refines; a refiner trained on another split
    (it may have seen that model's validation images) is refused."""
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
    mine = ckpt.get("split")
    if split and mine and (mine.get("fold"), mine.get("val_images")) != (
            split.get("fold"), split.get("val_images")):
        raise PipelineError(f"{path}: trained for fold {mine.get('fold')} of "
                            f"{mine.get('folds_file')}, not the split of the model beside it; "
                            f"retrain it with `{refine_command(path)}`")
    cfg = from_dict(RefineConfig, ckpt["refine_config"], source=f"{path} refine_config")
    model = EdgeRefiner(cfg.width)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg


def refiner_source(path: str | Path) -> str | None:
    """The ``source`` recorded in the refiner checkpoint at ``path``; None when there is no
    readable refiner there or it records none."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 -- missing or broken: nothing to keep
        return None
    return ckpt.get("source") if isinstance(ckpt, dict) and ckpt.get("kind") == KIND else None
