"""The hand-written U-Net: the paper's contracting path, bottleneck and expanding path.

With the defaults (``base_width=64``, ``depth=4``) the channels are 64-128-256-512-1024 down and
512-256-128-64 up, as in Ronneberger et al. (2015), with batch norm and same-padded convolutions
(so the output has the input's size) as the Carvana seeds build it. Ablations in ``ModelConfig``:
``batch_norm``, ``skip`` (without skips the decoder sees only the bottleneck), ``upsample``
(transposed conv or bilinear), ``kernel_size``, ``depth``, ``base_width``, ``classes``.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.unet_parts import DoubleConv, Down, OutConv, Up, crop_pads, pad_to_multiple


class UNet(nn.Module):
    """U-Net returning logits N x classes x H x W for any H, W (reflect-padded to a multiple of
    2**depth inside, cropped back at the end)."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        *,
        base_width: int = 64,
        depth: int = 4,
        batch_norm: bool = True,
        skip: bool = True,
        upsample: str = "transpose",
        kernel_size: int = 3,
    ):
        super().__init__()
        self.depth = depth
        self.skip = skip
        conv = {"kernel_size": kernel_size, "batch_norm": batch_norm}
        widths = [base_width * 2**i for i in range(depth + 1)]  # 64, 128, 256, 512, 1024

        self.inc = DoubleConv(in_channels, widths[0], **conv)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], **conv) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], widths[i] if skip else 0, upsample=upsample, **conv)
            for i in reversed(range(depth))
        )
        self.outc = OutConv(widths[0], classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation, as the paper recommends: without batch norm, PyTorch's default
        # (a smaller gain) shrinks the signal over the 2 * (2 * depth + 1) convolutions.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x in_channels x H x W -> logits N x classes x H x W."""
        x, pads = pad_to_multiple(x, 2**self.depth)
        skips = [self.inc(x)]  # full resolution, base_width channels
        for down in self.downs:  # each halves H, W and doubles the channels
            skips.append(down(skips[-1]))
        x = skips.pop()  # the bottleneck: H / 2**depth, base_width * 2**depth channels
        for up in self.ups:  # each doubles H, W, halves the channels, joins the matching skip
            x = up(x, skips.pop() if self.skip else None)
        return crop_pads(self.outc(x), pads)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``forward`` and return its intermediate feature maps, for visualisation.

        Keys: ``first_double_conv`` (base_width x H' x W'), ``down1``..``down{depth}``
        (base_width * 2**i x H' / 2**i x W' / 2**i), ``bottleneck`` (= the last down),
        ``up1``..``up{depth}`` (decoder outputs, coarse to fine; ``first_up`` = ``up1``, at
        H' / 2**(depth-1)), and ``logits`` (classes x H x W). H', W' are the input size rounded
        up to a multiple of 2**depth: every map except the logits is at the padded size.
        """
        named = {"first_double_conv": self.inc}
        named.update({f"down{i + 1}": m for i, m in enumerate(self.downs)})
        named.update({f"up{i + 1}": m for i, m in enumerate(self.ups)})
        features: dict[str, torch.Tensor] = {}
        hooks = [
            module.register_forward_hook(
                lambda _m, _in, out, key=key: features.__setitem__(key, out)
            )
            for key, module in named.items()
        ]
        try:
            features["logits"] = self.forward(x)
        finally:
            for hook in hooks:
                hook.remove()
        features["bottleneck"] = features[f"down{self.depth}"]
        features["first_up"] = features["up1"]
        return features
