"""Image and mask readers and writers.

Conventions: images are RGB ``uint8`` arrays of shape (H, W, 3); masks are ``uint8`` arrays of
shape (H, W) with values {0, 1}. Kaggle's masks are palette GIFs whose palette indices are the
labels themselves, so Pillow gives {0, 1} directly (some OpenCV builds cannot read GIF at all).
A mask with any other value (a 0/255 PNG from another tool) is refused, not guessed at.

Truncated files are refused too: OpenCV decodes a JPEG cut short without an error (the missing
rows come out grey), so JPEG and PNG files must end with their end marker
(:func:`check_complete`).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.errors import PipelineError

cv2.setNumThreads(0)  # DataLoader workers decode in parallel already

# The last bytes a complete file holds: JPEG's end-of-image marker (searched for in the last
# kB, as some writers pad after it) and PNG's IEND chunk (always the final 12 bytes).
JPEG_END, PNG_END = b"\xff\xd9", b"\x00\x00\x00\x00IEND\xaeB`\x82"
TAIL_BYTES = 1024


def check_complete(path: str | Path) -> None:
    """Raise one line when a JPEG or PNG file lacks its end marker (a download or copy cut
    short). Reads only the last kB; other formats pass (their decoders notice truncation)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    if suffix == ".png":
        complete, marker = tail.endswith(PNG_END), "PNG IEND chunk"
    else:
        complete, marker = JPEG_END in tail, "JPEG end-of-image marker (FFD9)"
    if not complete:
        raise PipelineError(
            f"{path}: truncated or corrupt (no {marker} at the end); "
            "re-download or re-extract it, or delete it with its pair"
        )


def read_image(path: str | Path) -> np.ndarray:
    """JPEG (or any format OpenCV reads) -> RGB uint8 (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: image not found")
    check_complete(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PipelineError(f"{path}: cannot be read as an image (corrupt or not an image file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """Kaggle GIF (or PNG) mask -> uint8 (H, W) in {0, 1}; any other value is a one-line error
    (a 0/255 mask is not silently thresholded: which value means car is the user's call)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: mask not found")
    check_complete(path)
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L") if im.mode not in ("P", "L", "1") else im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as a mask ({exc})") from None
    mask = mask.astype(np.uint8, copy=False)
    if mask.max(initial=0) > 1:
        raise PipelineError(f"{path}: {mask_values_message(mask)}")
    return mask


def mask_values_message(mask: np.ndarray) -> str:
    """What is wrong with a uint8 mask holding values other than 0 and 1, and the fix."""
    values = np.flatnonzero(np.bincount(mask.reshape(-1), minlength=2)).tolist()
    shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
    return (
        f"mask values {{{shown}}} found, expected only 0 (background) and 1 (car); convert it "
        "with mask = (mask > 0) and save it with pipeline.data.io.write_mask_gif"
    )


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


def verify_image(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image after decoding every pixel once (Pillow releases the GIL, so
    threads verify in parallel): one line for a truncated or corrupt file."""
    path = Path(path)
    check_complete(path)
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise PipelineError(
            f"{path}: cannot be decoded ({exc}); re-download or re-extract it, "
            "or delete it with its pair"
        ) from None


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
