"""Dataset validation on deliberately broken copies of the tiny dataset: every bad input is one
problem naming the file (errors stop training, warnings do not), and every image and mask is
decoded once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import validate as validate_mod
from pipeline.data.io import image_size, read_mask, write_image, write_mask_gif
from pipeline.data.layout import Layout, mask_name
from pipeline.data.validate import ERROR, TEST_LISTED, WARNING, Problem, check, validate
from pipeline.errors import PipelineError

TINY = (64, 96)


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
    assert problem.path == path and "corrupt" in str(problem)
    # file reads can be skipped (and then the corrupt file goes unnoticed)
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


# --------------------------------------------------------------------------- decoding


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_image_with_an_intact_header_is_an_error(copy):
    """The header (and so the size) still reads: only decoding the pixels finds it."""
    img = sorted(copy.train_dir.iterdir())[4]
    _cut(img, img.stat().st_size // 2)
    assert image_size(img) == TINY[::-1]
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == img and "truncated" in str(problem)
    with pytest.raises(PipelineError) as info:
        check(copy.root, expected=TINY, echo=None)
    assert str(img) in str(info.value) and "\n" not in str(info.value)


def test_a_jpeg_missing_only_its_end_marker_is_an_error(copy):
    img = sorted(copy.train_dir.iterdir())[6]
    _cut(img, img.stat().st_size - 2)  # FFD9 gone, every pixel still there
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == img and "FFD9" in str(problem)


def test_truncated_mask_is_an_error(copy):
    img = sorted(copy.train_dir.iterdir())[8].name
    mask = copy.mask_path(img)
    _cut(mask, mask.stat().st_size - 30)
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == mask and "truncated" in str(problem)


def test_a_0_255_mask_is_an_error_naming_the_values_and_the_fix(copy):
    img = sorted(copy.train_dir.iterdir())[10].name
    mask = copy.mask_path(img)
    values = read_mask(mask)
    Image.fromarray(values * 255).save(mask, format="GIF", optimize=False)
    problem = _only(validate(copy.root, expected=TINY), ERROR)
    assert problem.path == mask
    assert "mask values {0, 255} found" in str(problem) and "mask = (mask > 0)" in str(problem)


def test_every_mask_0_255_is_still_one_line(copy):
    for mask in copy.mask_dir.iterdir():
        Image.fromarray(read_mask(mask) * 255).save(mask, format="GIF", optimize=False)
    with pytest.raises(PipelineError) as info:
        check(copy.root, expected=TINY, echo=None)
    message = str(info.value)
    assert "\n" not in message and "64 problems" in message and "{0, 255}" in message


def test_broken_test_images_are_warnings_summed_up_when_many(copy):
    broken = sorted(copy.test_dir.iterdir())[: TEST_LISTED + 3]
    for img in broken:
        _cut(img, img.stat().st_size - 2)
    problems = validate(copy.root, expected=TINY)
    assert _errors(problems) == []  # training is unaffected
    named = [p for p in problems if p.path in broken]
    assert len(named) == TEST_LISTED and all("FFD9" in p.message for p in named)
    rest = _only([p for p in problems if p.path == copy.test_dir], WARNING)
    assert "3 more test images" in rest.message and broken[-1].name in rest.message


def test_only_the_end_marker_of_unsampled_test_images_is_read(copy, monkeypatch):
    monkeypatch.setattr(validate_mod, "TEST_SIZE_SAMPLE", 4)
    decoded = []
    monkeypatch.setattr(validate_mod, "verify_image",
                        lambda p: decoded.append(p) or TINY[::-1])
    names = sorted(copy.test_dir.iterdir())
    _cut(names[1], names[1].stat().st_size - 2)  # not in the sample of 4 (every 8th image)
    problems = validate(copy.root, expected=TINY)
    assert len([p for p in decoded if p.parent == copy.test_dir]) == 4
    assert _only(problems, WARNING).path == names[1]


def test_progress_bar_while_decoding(copy, capsys):
    check(copy.root, expected=TINY, echo=None, progress=True)
    assert "decode train" in capsys.readouterr().err


# --------------------------------------------------------------------------- real files


@pytest.mark.real_data
def test_real_folder_validates(real_root):
    start = time.perf_counter()
    problems = validate(real_root)
    elapsed = time.perf_counter() - start
    assert _errors(problems) == [], [str(p) for p in _errors(problems)][:5]
    # it is a training-only copy: one test image of the 100064 named
    assert any(p.path == Layout(real_root).test_dir for p in problems)
    summary = check(real_root, check_sizes=False, echo=None)
    assert (summary.train_images, summary.train_cars) == (1552, 97)
    assert summary.size == (1280, 1918)
    # every image and mask decoded once on a thread pool: ~10 s on 2 busy cores
    assert elapsed < 120
