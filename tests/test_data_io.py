"""Image and mask readers: round trips, and one line for every damaged file (missing, garbage,
truncated with an intact header, a mask with values other than 0 and 1)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.data.io import (
    image_size,
    read_image,
    read_mask,
    verify_image,
    write_image,
    write_mask_gif,
)
from pipeline.data.layout import Layout
from pipeline.errors import PipelineError


def _one_line(info: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in parts), message
    return message


def _noise_jpeg(path, shape=(64, 96)) -> bytes:
    """A JPEG of random pixels (so most of its bytes are pixel data, after a short header)."""
    write_image(path, np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8))
    return path.read_bytes()


def test_mask_gif_round_trip(tmp_path):
    mask = (np.random.default_rng(0).random((20, 30)) > 0.5).astype(np.uint8)
    write_mask_gif(tmp_path / "m.gif", mask)
    with Image.open(tmp_path / "m.gif") as im:
        assert im.format == "GIF" and im.mode == "P"  # palette index = label, like Kaggle's
    back = read_mask(tmp_path / "m.gif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    Image.fromarray(mask.astype(bool)).save(tmp_path / "m1.png")  # a 1-bit PNG is {0, 1} too
    np.testing.assert_array_equal(read_mask(tmp_path / "m1.png"), mask)
    assert image_size(tmp_path / "m.gif") == (30, 20)


def test_image_io_and_errors(tmp_path):
    rgb = np.zeros((10, 14, 3), np.uint8)
    rgb[..., 0] = 200  # red: checks the channel order survives the BGR round trip
    write_image(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgb)
    with pytest.raises(PipelineError, match="nothere.jpg: image not found"):
        read_image(tmp_path / "nothere.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(PipelineError, match="bad.jpg"):
        image_size(tmp_path / "bad.jpg")
    with pytest.raises(PipelineError, match="bad.jpg"):
        read_mask(tmp_path / "bad.jpg")


def test_truncated_jpeg_with_an_intact_header_is_one_line(tmp_path):
    data = _noise_jpeg(tmp_path / "whole.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert image_size(cut) == (96, 64)  # the header still reads ...
    assert cv2.imread(str(cut)) is not None  # ... and OpenCV decodes it silently, grey rows
    with pytest.raises(PipelineError) as info:
        read_image(cut)
    _one_line(info, str(cut), "truncated", "re-download")
    with pytest.raises(PipelineError) as info:
        verify_image(cut)
    _one_line(info, str(cut), "truncated")
    assert verify_image(tmp_path / "whole.jpg") == (96, 64)


def test_bytes_after_the_jpeg_end_marker_are_accepted(tmp_path):
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(_noise_jpeg(tmp_path / "whole.jpg") + b"\x00" * 100)  # some writers pad
    assert read_image(padded).shape == (64, 96, 3)
    assert verify_image(padded) == (96, 64)


def test_truncated_png_and_gif_are_one_line(tmp_path):
    write_image(tmp_path / "x.png", np.full((32, 48, 3), 7, np.uint8))
    mask = np.zeros((32, 48), np.uint8)
    mask[5:20, 10:40] = 1
    write_mask_gif(tmp_path / "m.gif", mask)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    for name, read in [("x.png", read_image), ("m.png", read_mask), ("m.gif", read_mask)]:
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 20])
        with pytest.raises(PipelineError) as info:
            read(tmp_path / name)
        _one_line(info, name)


@pytest.mark.parametrize("values", [(0, 255), (0, 1, 2), (0, 128)])
def test_mask_with_values_other_than_0_and_1_is_one_line(tmp_path, values):
    """A 0/255 mask used to be thresholded at 127 in silence (and a 0/1/2 label map came out
    with its 2s as car): now it is refused with the values found and the fix."""
    mask = np.zeros((20, 30), np.uint8)
    for i, v in enumerate(values):
        mask[i * 5 : i * 5 + 5] = v
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.raises(PipelineError) as info:
        read_mask(tmp_path / "m.png")
    found = "{" + ", ".join(map(str, values)) + "}"
    _one_line(info, "m.png", f"mask values {found} found", "mask = (mask > 0)")


@pytest.mark.real_data
def test_the_first_20_kB_of_a_real_image_is_one_line(real_root, tmp_path):
    source = Layout(real_root).train_dir / "00087a6bd4dc_01.jpg"
    cut = tmp_path / source.name
    cut.write_bytes(source.read_bytes()[:20_000])
    assert image_size(cut) == (1918, 1280)
    for read in (read_image, verify_image):
        with pytest.raises(PipelineError) as info:
            read(cut)
        _one_line(info, str(cut), "truncated")
