"""Decoding the photos to predict on the device (``predict.decode: device``).

The default, ``workers``, decodes each JPEG with OpenCV in a DataLoader worker and resizes it
there (:mod:`pipeline.inference.loader`). With ``device`` the workers only read the files' bytes
and check their headers; the main process decodes a whole batch at once with
:func:`torchvision.io.decode_jpeg` on the prediction device (nvJPEG on a GPU), and resizes on
the device. That frees the CPU cores a GPU would otherwise wait for; ``python -m
pipeline.benchmark gpu`` measures both ways on the same files, so choose by what it prints.

Both decoders are libjpeg-style IDCTs of the same files: on a CPU torchvision's libjpeg-turbo
gives the same pixels as OpenCV's; nvJPEG may differ by a few grey levels at some pixels. A
shrink on the device is OpenCV's ``INTER_AREA`` as two matrix products in float32 (partial
pixels weighted by their overlap), so it matches the workers' resize up to rounding; at the
full size no resize happens at all.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.data.io import check_complete
from pipeline.errors import PipelineError

DECODERS = ("workers", "device")
JPEG_START = b"\xff\xd8"


def check_decoder(decode: str) -> str:
    if decode not in DECODERS:
        raise PipelineError(f"predict.decode: '{decode}' is not one of {', '.join(DECODERS)}")
    return decode


def read_jpeg(path: str | Path) -> tuple[torch.Tensor, tuple[int, int]]:
    """A JPEG file's bytes (uint8 1-D tensor) and its (height, width) read from the header
    alone; a missing, truncated or non-JPEG file is one :class:`PipelineError` line."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: image not found")
    check_complete(path)
    data = path.read_bytes()
    if not data.startswith(JPEG_START):
        raise PipelineError(f"{path}: not a JPEG file; predict.decode=device decodes JPEG only "
                            "(use predict.decode=workers for other formats)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as an image ({exc})") from None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), (height, width)


def decode_batch(jpegs: Sequence[torch.Tensor], device: torch.device,
                 names: Sequence[str] = ()) -> torch.Tensor:
    """JPEG bytes of same-sized images -> uint8 N x H x W x 3 RGB on ``device``, one batched
    call (nvJPEG on CUDA).

    On CUDA the current stream is synchronised first. ``decode_jpeg`` allocates its outputs on
    the caller's stream but writes them from a private stream that does not wait for it, so
    the caching allocator could hand it memory that kernels still queued on the current stream
    (the previous batch's forward, its upsampling, the encoder's copy) are reading: the decode
    would overwrite their inputs and the masks come out wrong without an error (pytorch/vision
    #9606; torchcodec #1634 fixed the same nvJPEG behaviour this way)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    try:
        images = decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        where = f" ({', '.join(names)})" if names else ""
        raise PipelineError(f"cannot decode a JPEG of this batch{where}: "
                            f"{str(exc).splitlines()[0]}") from None
    return torch.stack(images).permute(0, 2, 3, 1)


def area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """float64 ``n_out x n_in`` matrix of area averaging (``n_out <= n_in``): output pixel i is
    the mean of the input interval [i s, (i + 1) s), s = n_in / n_out, partial pixels weighted by
    the fraction inside it (OpenCV's ``INTER_AREA`` when shrinking)."""
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64) * scale
    left, right = edges[:-1, None], edges[1:, None]
    pixel = torch.arange(n_in, dtype=torch.float64)[None]
    overlap = (torch.minimum(right, pixel + 1) - torch.maximum(left, pixel)).clamp_(min=0)
    return overlap / scale


def resize_batch(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 N x H x W x 3 -> N x height x width x 3 on the same device: area averaging when
    shrinking (two matrix products with :func:`area_weights`), bilinear
    (``align_corners=False``, as cv2.INTER_LINEAR) when growing."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    if height <= images.shape[1] and width <= images.shape[2]:
        rows = area_weights(images.shape[1], height).to(x)
        cols = area_weights(images.shape[2], width).to(x)
        x = rows @ x @ cols.T
    else:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
