"""Kaggle layout, image/mask I/O, and dataset validation on deliberately broken copies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import layout as layout_mod
from pipeline.data.io import image_size, read_image, read_mask, write_image, write_mask_gif
from pipeline.data.layout import Layout, image_name, mask_name, parse_name, train_index
from pipeline.data.validate import ERROR, WARNING, Problem, check, validate
from pipeline.errors import PipelineError

TINY = (64, 96)

# --------------------------------------------------------------------------- layout and I/O


def test_names_round_trip():
    assert parse_name("00087a6bd4dc_03.jpg") == ("00087a6bd4dc", 3)
    assert mask_name("00087a6bd4dc_03.jpg") == "00087a6bd4dc_03_mask.gif"
    assert image_name(mask_name("00087a6bd4dc_16.jpg")) == "00087a6bd4dc_16.jpg"
    for bad in ("00087a6bd4dc_3.jpg", "00087A6BD4DC_03.jpg", "car_01.jpg", "00087a6bd4dc_03.png"):
        with pytest.raises(PipelineError, match=bad.replace(".", r"\.")):
            parse_name(bad)


def test_mask_gif_round_trip(tmp_path):
    mask = (np.random.default_rng(0).random((20, 30)) > 0.5).astype(np.uint8)
    write_mask_gif(tmp_path / "m.gif", mask)
    with Image.open(tmp_path / "m.gif") as im:
        assert im.format == "GIF" and im.mode == "P"  # palette index = label, like Kaggle's
    back = read_mask(tmp_path / "m.gif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    Image.fromarray(mask * 255).save(tmp_path / "m.png")  # 0/255 masks from other tools
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
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


def test_train_index_and_test_names(tiny_data):
    index = train_index(tiny_data)
    assert list(index.columns) == [
        "img",
        "car_id",
        "angle",
        "image_path",
        "mask_path",
        "make",
        "model",
    ]
    assert len(index) == 64 and index["img"].is_monotonic_increasing
    assert (
        index.groupby("car_id")["angle"].apply(sorted).map(lambda a: a == list(range(1, 17))).all()
    )
    assert all(Path(p).is_file() for p in index["mask_path"])
    assert (index["make"] != "unknown").all()
    names = layout_mod.submission_names(tiny_data)
    assert len(names) == 32
    assert names == sorted(p.name for p in Layout(tiny_data).test_dir.iterdir())


# --------------------------------------------------------------------------- validation


@pytest.fixture
def copy(tiny_data, tmp_path) -> Layout:
    """A private copy of the tiny dataset to break."""
    shutil.copytree(tiny_data, tmp_path / "data")
    return Layout(tmp_path / "data")


def _errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


def _only(problems: list[Problem], severity: str) -> Problem:
    found = [p for p in problems if p.severity == severity]
    assert len(found) == 1, [str(p) for p in problems]
    return found[0]


def test_clean_copy_has_no_problems(copy):
    assert validate(copy.root, expected=TINY) == []
    assert validate(copy.root, expected=None) == []  # size taken from the images themselves
    summary = check(copy.root, expected=TINY)
    assert (summary.train_images, summary.train_cars, summary.test_images) == (64, 4, 32)
    assert summary.size == TINY
    assert "64 train images of 4 cars" in str(summary)


def test_missing_mask(copy):
    img = sorted(copy.train_dir.iterdir())[5].name
    copy.mask_path(img).unlink()
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == copy.mask_path(img)
    assert img in str(problem) and "missing" in str(problem)


def test_mask_without_image(copy):
    img = sorted(copy.train_dir.iterdir())[5]
    img.unlink()
    problems = validate(copy.root, expected=TINY)
    assert _errors(problems) == []
    stray = [p for p in problems if p.path == copy.mask_path(img.name)]
    assert len(stray) == 1 and "has no image" in str(stray[0])
    # the car now has 15 angles, and train_masks.csv names an image that is gone
    assert any("15 of 16 angles" in str(p) for p in problems)
    assert any(p.path == copy.train_masks_csv and img.name in str(p) for p in problems)


def test_fifteen_angles_is_a_warning(copy):
    img = sorted(copy.train_dir.iterdir())[20]
    img.unlink()
    copy.mask_path(img.name).unlink()
    problems = validate(copy.root, expected=TINY)
    assert _errors(problems) == []
    car = img.name[:12]
    warning = next(p for p in problems if "angles" in p.message)
    assert car in str(warning) and f"[{int(img.name[13:15])}]" in str(warning)
    check(copy.root, expected=TINY, echo=None)  # warnings do not stop anything


def test_wrong_image_size(copy):
    img = sorted(copy.train_dir.iterdir())[3]
    write_image(img, np.zeros((64, 95, 3), np.uint8))
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == img
    assert "95x64" in str(problem) and "expected 96x64" in str(problem)
    # with no expected size, the odd one out is still found
    assert _only(validate(copy.root, expected=None), ERROR).path == img
    # nothing matches Kaggle's size: every image and mask is reported
    assert len(_errors(validate(copy.root))) == 128


def test_wrong_mask_size(copy):
    img = sorted(copy.train_dir.iterdir())[7].name
    write_mask_gif(copy.mask_path(img), np.zeros((60, 96), np.uint8))
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == copy.mask_path(img) and "96x60" in str(problem)


@pytest.mark.parametrize("which", ["image", "mask"])
def test_corrupt_file(copy, which):
    img = sorted(copy.train_dir.iterdir())[9].name
    path = copy.train_dir / img if which == "image" else copy.mask_path(img)
    path.write_bytes(b"\x00not an image at all")
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == path and "cannot be read" in str(problem)
    # header reads can be skipped (and then the corrupt file goes unnoticed)
    assert _errors(validate(copy.root, check_sizes=False)) == []


def test_empty_or_missing_folders(copy, tmp_path):
    for p in copy.train_dir.iterdir():
        p.unlink()
    problem = _errors(validate(copy.root, expected=TINY))[0]
    assert problem.path == copy.train_dir and "no <car>_<NN>.jpg" in str(problem)
    copy.train_dir.rmdir()
    assert _errors(validate(copy.root))[0].path == copy.train_dir
    missing = _only(validate(tmp_path / "nowhere"), ERROR)
    assert "folder not found" in str(missing) and "nowhere" in str(missing)


def test_missing_mask_folder(copy):
    shutil.rmtree(copy.mask_dir)
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == copy.mask_dir and "train_masks.zip" in str(problem)


def test_optional_files_are_warnings(copy):
    copy.metadata_csv.unlink()
    copy.sample_submission_csv.unlink()
    copy.train_masks_csv.unlink()
    problems = validate(copy.root, expected=TINY)
    assert {p.severity for p in problems} == {WARNING}
    assert {p.path for p in problems} == {
        copy.metadata_csv,
        copy.sample_submission_csv,
        copy.train_masks_csv,
    }


def test_missing_test_images_are_a_warning(copy):
    names = sorted(copy.test_dir.iterdir())
    for p in names[3:]:
        p.unlink()
    problem = _only(validate(copy.root, expected=TINY), WARNING)
    assert problem.path == copy.test_dir
    assert "29 of 32 test images" in str(problem) and names[3].name in str(problem)


def test_check_raises_one_line_with_the_count(copy):
    images = sorted(copy.train_dir.iterdir())
    for img in images[:5]:
        copy.mask_path(img.name).unlink()
    with pytest.raises(PipelineError) as info:
        check(copy.root, expected=TINY, echo=None)
    message = str(info.value)
    assert "\n" not in message
    assert "5 problems" in message and "and 2 more" in message
    assert mask_name(images[0].name) in message
    warnings: list[str] = []
    copy.metadata_csv.unlink()
    for img in images[:5]:
        shutil.copy(copy.mask_dir / mask_name(images[5].name), copy.mask_path(img.name))
    check(copy.root, expected=TINY, echo=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")


def test_problem_is_one_line():
    p = Problem(ERROR, Path("data/train/x_01.jpg"), "is broken; fix it")
    assert str(p) == "error: data/train/x_01.jpg: is broken; fix it"


# --------------------------------------------------------------------------- real files


@pytest.mark.real_data
def test_real_folder_validates(real_root):
    start = time.perf_counter()
    problems = validate(real_root)
    elapsed = time.perf_counter() - start
    assert _errors(problems) == [], [str(p) for p in _errors(problems)][:5]
    # it is a training-only copy: one test image of the 100064 named
    assert any(p.path == Layout(real_root).test_dir for p in problems)
    summary = check(real_root, echo=None)
    assert (summary.train_images, summary.train_cars) == (1552, 97)
    assert summary.size == (1280, 1918)
    assert elapsed < 30  # header reads only
