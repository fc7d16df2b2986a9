"""``build_model(ModelConfig)``: the hand-written U-Net or any segmentation-models-pytorch model.

``arch: unet`` (lower case, exactly) builds :class:`pipeline.models.unet.UNet`; any other value
is an SMP architecture name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ``Linknet``,
``Segformer``, ...) built by ``smp.create_model`` with ``encoder`` and ``encoder_weights``:
None by default (nothing is downloaded), a name such as ``imagenet`` (SMP downloads it: needs
internet), or a local file (a path: ends in .pt/.pth/.bin/.safetensors or contains a slash)
holding the encoder's state_dict, saved once where there is internet::

    torch.save(smp.Unet("resnet34", encoder_weights="imagenet").encoder.state_dict(), "r34.pth")

A local file is loaded (strictly) into ``model.encoder`` of a model built without weights; no
network is touched. SMP models are wrapped
in :class:`PadToMultiple`, so every model takes any H x W (1280 x 1918 included) and returns
logits N x classes x H x W.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path

import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import PipelineError
from pipeline.models.unet import UNet
from pipeline.models.unet_parts import PadToMultiple

HAND_WRITTEN = "unet"
UPSAMPLE_MODES = ("transpose", "bilinear")
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def smp_architectures() -> list[str]:
    """SMP's architecture class names (Unet, UnetPlusPlus, FPN, ...)."""
    import segmentation_models_pytorch as smp

    return [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model for ``cfg``: logits N x classes x H x W for any H, W."""
    if cfg.classes < 1 or cfg.in_channels < 1:
        raise PipelineError(
            f"model config '{cfg.label}': classes and in_channels must be >= 1 "
            f"(got classes={cfg.classes}, in_channels={cfg.in_channels})"
        )
    if cfg.bn_momentum is not None and not 0 < cfg.bn_momentum <= 1:
        raise PipelineError(
            f"model config '{cfg.label}': model.bn_momentum must be in (0, 1] or null "
            f"(got {cfg.bn_momentum})"
        )
    model = _build_unet(cfg) if cfg.arch == HAND_WRITTEN else _build_smp(cfg)
    if cfg.bn_momentum is not None:
        set_bn_momentum(model, cfg.bn_momentum)
    return model


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set the running-average momentum of every BatchNorm layer; returns how many there are.

    EfficientNet encoders ship TensorFlow's 0.99 decay, which is PyTorch momentum 0.01. From
    scratch, a few hundred steps leave their running statistics far from the batch statistics,
    and a model with a low training loss predicts nothing in eval mode.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def _build_unet(cfg: ModelConfig) -> UNet:
    problems = []
    if cfg.depth < 1:
        problems.append(f"model.depth must be >= 1 (got {cfg.depth})")
    if cfg.base_width < 1:
        problems.append(f"model.base_width must be >= 1 (got {cfg.base_width})")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        problems.append(
            f"model.kernel_size must be odd (same padding needs it; got {cfg.kernel_size})"
        )
    if cfg.upsample not in UPSAMPLE_MODES:
        problems.append(f"model.upsample must be one of {', '.join(UPSAMPLE_MODES)}")
    if problems:
        raise PipelineError(f"model config '{cfg.label}': " + "; ".join(problems))
    return UNet(
        cfg.in_channels,
        cfg.classes,
        base_width=cfg.base_width,
        depth=cfg.depth,
        batch_norm=cfg.batch_norm,
        skip=cfg.skip,
        upsample=cfg.upsample,
        kernel_size=cfg.kernel_size,
    )


def is_weights_file(encoder_weights: str | None) -> bool:
    """True when ``model.encoder_weights`` names a local file rather than SMP weights."""
    if not encoder_weights:
        return False
    return encoder_weights.endswith(WEIGHT_FILE_SUFFIXES) or "/" in encoder_weights


def without_pretrained(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with ``encoder_weights=None``: the same network, randomly initialised, for a
    model whose weights come from elsewhere (a checkpoint), so nothing is downloaded or read."""
    return dataclasses.replace(cfg, encoder_weights=None)


def load_encoder_file(encoder: nn.Module, path: str | Path, label: str = "model") -> None:
    """Load a local encoder state_dict (torch.save or safetensors) strictly into ``encoder``;
    a missing file, another format or other keys/shapes is one line naming the file."""
    path = Path(path)
    where = f"model config '{label}': model.encoder_weights file {path}"
    if not path.is_file():
        raise PipelineError(f"{where} not found; save it once where there is internet "
                            "(torch.save(smp.Unet(ENC, encoder_weights='imagenet')"
                            ".encoder.state_dict(), FILE)) or set model.encoder_weights=null")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch/safetensors raise many types for a bad file
        raise PipelineError(f"{where} is not a readable state_dict ({type(exc).__name__}); "
                            "save it with torch.save(model.encoder.state_dict(), FILE)") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PipelineError(f"{where} is not an encoder state_dict (a mapping of names to "
                            "tensors, e.g. model.encoder.state_dict())")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PipelineError(
            f"{where} does not fit the {type(encoder).__name__} encoder: "
            f"{_state_mismatch(encoder, state, exc)}; save model.encoder.state_dict() of the "
            "same encoder name"
        ) from None


def _state_mismatch(encoder: nn.Module, state: dict, exc: Exception) -> str:
    """What differs between ``state`` and the encoder's own state_dict, in a few words."""
    own = set(encoder.state_dict())
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    parts = [f"{len(keys)} {what} key(s) (e.g. {keys[0]})"
             for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if not parts:  # same names: a tensor of another shape
        parts = [ln.strip().rstrip(".") for ln in str(exc).splitlines() if "size mismatch" in ln]
    return ", ".join(parts[:2]) or "the tensors differ"


def _build_smp(cfg: ModelConfig) -> PadToMultiple:
    import segmentation_models_pytorch as smp

    if cfg.arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        valid = [HAND_WRITTEN + " (hand-written)"] + smp_architectures()
        close = difflib.get_close_matches(cfg.arch, [HAND_WRITTEN] + smp_architectures(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise PipelineError(
            f"model config '{cfg.label}': unknown model.arch '{cfg.arch}'{hint}; "
            f"valid: {', '.join(valid)}"
        )
    weights_file = cfg.encoder_weights if is_weights_file(cfg.encoder_weights) else None
    try:
        model = smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=None if weights_file else cfg.encoder_weights,
            in_channels=cfg.in_channels,
            classes=cfg.classes,
        )
    except Exception as exc:  # noqa: BLE001 -- KeyError for a bad name, hub/HTTP errors offline
        raise PipelineError(
            f"model config '{cfg.label}': SMP cannot build {cfg.arch} with encoder "
            f"'{cfg.encoder}' and encoder_weights={cfg.encoder_weights}: {_first_line(exc)}"
            f"{_encoder_hint(cfg)}"
        ) from None
    if weights_file:  # before the unused head goes: the file holds the whole encoder
        load_encoder_file(model.encoder, weights_file, cfg.label)
    _drop_unused_head(model.encoder)
    # Encoders downsample by output_stride (32; 16 for DeepLabV3+); padding to a multiple of
    # both it and pad_multiple keeps SMP's own divisibility check satisfied for any image size.
    stride = getattr(model.encoder, "output_stride", 1)
    return PadToMultiple(model, math.lcm(max(cfg.pad_multiple, 1), stride))


def _drop_unused_head(encoder: nn.Module) -> None:
    """SMP's EfficientNet encoders keep the ImageNet classifier's conv head (``_conv_head``,
    ``_bn1``), which their forward never calls. Parameters that never get a gradient make
    DistributedDataParallel fail, so they go (after any pretrained weights were loaded)."""
    if "EfficientNet" in type(encoder).__name__:
        for name in ("_conv_head", "_bn1"):
            if isinstance(getattr(encoder, name, None), nn.Module):
                delattr(encoder, name)


def _first_line(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)  # KeyError repr-quotes its message
    text = (text.strip().splitlines() or [""])[0]
    text = text.split(", supported encoders")[0]  # SMP appends all ~100 names
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _encoder_hint(cfg: ModelConfig) -> str:
    import segmentation_models_pytorch as smp

    names = smp.encoders.get_encoder_names()
    if cfg.encoder not in names and not cfg.encoder.startswith("tu-"):
        close = difflib.get_close_matches(cfg.encoder, names, n=3)
        return f" (close encoders: {', '.join(close)})" if close else ""
    if cfg.encoder_weights:
        return (" (named weights need internet: save the encoder's state_dict once and set "
                "model.encoder_weights to its path, or null to train from scratch)")
    return ""


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
