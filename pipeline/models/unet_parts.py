"""U-Net building blocks (Ronneberger et al. 2015, as milesial/Pytorch-UNet writes them) and the
pad-to-a-multiple helpers that let any network take any image size.

Shapes are N x C x H x W. Every 3x3 (or k x k) convolution uses "same" padding, so only the
2x2 max-pools change the spatial size: a U-Net of depth d needs H and W divisible by 2**d, and
``pad_to_multiple`` / ``PadToMultiple`` provide that for any input and crop the output back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Pads = tuple[int, int, int, int]  # (left, right, top, bottom), the order F.pad takes


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, Pads]:
    """Pad H and W of ``x`` (N x C x H x W) up to the next multiple of ``multiple``.

    The padding is split between both sides (the extra pixel goes right/bottom) so the image
    stays centred, and it mirrors the image (reflect) rather than adding a black border the
    network never saw in training; inputs too small to mirror fall back to replicating the edge.
    Returns the padded tensor and the pads for :func:`crop_pads`.
    """
    h, w = x.shape[-2:]
    dh, dw = -h % multiple, -w % multiple
    if dh == 0 and dw == 0:
        return x, (0, 0, 0, 0)
    pads = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    padded = F.pad(x, pads, mode=mode)
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        padded = padded.contiguous(memory_format=torch.channels_last)  # keep the fast layout
    return padded, pads


def crop_pads(y: torch.Tensor, pads: Pads) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on an output of the padded size (N x C x H' x W')."""
    left, right, top, bottom = pads
    if pads == (0, 0, 0, 0):
        return y
    h, w = y.shape[-2:]
    return y[..., top : h - bottom, left : w - right].contiguous()


class PadToMultiple(nn.Module):
    """Reflect-pad H and W up to a multiple, run the wrapped model, crop back to H x W."""

    def __init__(self, model: nn.Module, multiple: int):
        super().__init__()
        # Named ``model`` (not ``module``) so checkpoint.unwrap, which strips DDP's ``.module``,
        # keeps this wrapper and the state_dict keys stay the same on save and load.
        self.model = model
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x C x H x W, any H, W -> the model's output at N x K x H x W."""
        padded, pads = pad_to_multiple(x, self.multiple)
        y = self.model(padded)
        if y.shape[-2:] != padded.shape[-2:]:
            # An architecture that predicts at a stride (none of SMP's do once padded) still
            # returns a full-size map.
            y = F.interpolate(y, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return crop_pads(y, pads)


class DoubleConv(nn.Module):
    """(conv k x k, same padding => [batch norm] => ReLU) * 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        batch_norm: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias before batch norm is cancelled by its mean subtraction, so only the
            # no-batch-norm ablation has one.
            layers.append(
                nn.Conv2d(
                    c_in, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm
                )
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.double_conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max-pool (halves H and W), then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, **conv):
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, **conv)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upsample x2 halving the channels, concatenate the skip ("copy and crop"), double conv.

    ``in_channels`` come from below; the upsampler halves them (2x2 transposed conv, or bilinear
    interpolation followed by a 1x1 conv, so both variants hand the same channels on). With
    ``skip_channels=0`` there is no concatenation: the block sees only the path from below.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: int,
        *,
        upsample: str = "transpose",
        **conv,
    ):
        super().__init__()
        half = in_channels // 2
        if upsample == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        elif upsample == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, kernel_size=1),
            )
        else:
            raise ValueError(f"upsample must be 'transpose' or 'bilinear', got {upsample!r}")
        self.skip_channels = skip_channels
        self.conv = DoubleConv(half + skip_channels, out_channels, **conv)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x: N x in x h x w, skip: N x skip_channels x 2h x 2w (or None) -> N x out x 2h x 2w."""
        x = self.up(x)
        if self.skip_channels:
            if skip is None:
                raise ValueError("this Up block was built with a skip connection; pass the skip")
            # The paper crops the skip to the (smaller, unpadded-conv) decoder map; with same
            # padding the sizes only differ when the caller did not pad to 2**depth, so pad the
            # upsampled map up to the skip instead.
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if dh or dw:
                x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            x = torch.cat([skip, x], dim=1)
        elif skip is not None:
            raise ValueError("this Up block was built without a skip connection; pass None")
        return self.conv(x)


class OutConv(nn.Module):
    """1x1 conv to one logit per class and pixel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
