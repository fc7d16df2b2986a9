"""Image and mask readers and writers.

Conventions: images are RGB ``uint8`` arrays of shape (H, W, 3); masks are ``uint8`` arrays of
shape (H, W) with values {0, 1}. Kaggle's masks are palette GIFs whose palette indices are the
labels themselves, so Pillow gives {0, 1} directly (some OpenCV builds cannot read GIF at all).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.errors import PipelineError

cv2.setNumThreads(0)  # DataLoader workers decode in parallel already


def read_image(path: str | Path) -> np.ndarray:
    """JPEG (or any format OpenCV reads) -> RGB uint8 (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: image not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PipelineError(f"{path}: cannot be read as an image (corrupt or not an image file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """Kaggle GIF (or PNG) mask -> uint8 (H, W) in {0, 1}."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L") if im.mode not in ("P", "L", "1") else im)
    except (OSError, SyntaxError) as exc:
        raise PipelineError(f"{path}: cannot be read as a mask ({exc})") from None
    mask = mask.astype(np.uint8, copy=False)
    if mask.max(initial=0) > 1:  # 0/255 masks from other tools
        mask = (mask > 127).astype(np.uint8)
    return mask


def write_mask_gif(path: str | Path, mask: np.ndarray) -> None:
    """Write a {0, 1} mask as a palette GIF the way Kaggle's files are (index = label)."""
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    im.save(path, format="GIF")


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 92) -> None:
    """RGB uint8 -> JPEG (or PNG by suffix)."""
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise PipelineError(f"{path}: could not write image")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError) as exc:
        raise PipelineError(f"{path}: cannot be read ({exc})") from None


def image_shape(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header: the output shape of a prediction set."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: image not found")
    w, h = image_size(path)
    return h, w
