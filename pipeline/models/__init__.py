"""Networks: the hand-written U-Net (``unet_parts``, ``unet``), SMP baselines (``factory``) and
self-describing checkpoints (``checkpoint``). ``build_model(ModelConfig)`` is the entry point."""

from pipeline.models.factory import build_model, count_parameters
from pipeline.models.unet import UNet
from pipeline.models.unet_parts import PadToMultiple

__all__ = ["PadToMultiple", "UNet", "build_model", "count_parameters"]
