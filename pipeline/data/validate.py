"""Check that a folder is a usable Carvana dataset in Kaggle layout, before any stage runs.

``validate`` returns every problem found; each prints as one line naming the file, what is
wrong and what to do. Errors make the folder unusable for training (no images, a missing mask,
a wrong size, a truncated or corrupt file, a mask with values other than 0 and 1); warnings do
not (an incomplete car, a missing ``metadata.csv``, a training-only folder without the test
images).

Every training image and mask is decoded once, by a pool of threads (the decoders release the
GIL), so a file whose header is intact but whose pixels are cut short is found here and not
deep in training. The test set (100064 images) is checked more cheaply: every listed test
image must end with its JPEG end marker, and a sample of them is decoded.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.config import FULL_HEIGHT, FULL_WIDTH
from pipeline.data.io import check_complete, image_size, read_mask, verify_image
from pipeline.data.layout import ANGLES, NAME_RE, Layout, image_name, mask_name
from pipeline.errors import PipelineError

ERROR, WARNING = "error", "warning"
MASK_SUFFIX = "_mask.gif"
TEST_SIZE_SAMPLE = 64  # test images decoded (the real test set has 100064)
TEST_LISTED = 5  # broken test images named one warning each; more are summed up in one
DECODE_WORKERS = max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` is "error" or "warning"; ``message`` says what is wrong and
    what to do about it."""

    severity: str
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass(frozen=True)
class Summary:
    """What a valid folder holds (for the one-line report at the end of the data stage)."""

    root: Path
    train_images: int
    train_cars: int
    test_images: int
    size: tuple[int, int] | None  # (height, width) of the training images
    warnings: int

    def __str__(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "unknown size"
        return (
            f"{self.root}: {self.train_images} train images of {self.train_cars} cars, "
            f"{self.test_images} test images, {size} (height x width)"
            + (f", {self.warnings} warning(s)" if self.warnings else "")
        )


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError:
        return []


Outcome = tuple[tuple[int, int] | None, str | None]  # ((height, width), None) or (None, why)


def _decode(kind: str, path: Path) -> Outcome:
    """Decode one file the way the pipeline will: "image" (every pixel), "mask" (every pixel,
    values in {0, 1}) or "tail" (the end marker only)."""
    try:
        if kind == "mask":
            return read_mask(path).shape, None
        if kind == "tail":
            check_complete(path)
            return None, None
        w, h = verify_image(path)
        return (h, w), None
    except PipelineError as exc:  # its message starts with the path, which Problem prints
        return None, str(exc).removeprefix(f"{path}: ")


def _decode_all(jobs: list[tuple[str, Path]], desc: str, progress: bool) -> list[Outcome]:
    """:func:`_decode` every (kind, path) on a thread pool, in order, with a progress bar."""
    if not jobs:
        return []
    with (
        ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool,
        tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress, leave=False) as bar,
    ):
        out = []
        for outcome in pool.map(lambda job: _decode(*job), jobs):
            out.append(outcome)
            bar.update()
    return out


def _few(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def validate(
    root: str | Path,
    check_sizes: bool = True,
    expected: tuple[int, int] | None = (FULL_HEIGHT, FULL_WIDTH),
    progress: bool = False,
) -> list[Problem]:
    """Every problem of the Kaggle-layout folder ``root``, errors first.

    ``expected`` is the (height, width) every image and mask must have; ``None`` takes the most
    common training-image size as the reference. ``check_sizes=False`` skips every file read
    (and so the size, decoding and mask-value checks). ``progress`` shows a bar while decoding.
    """
    layout = Layout(root)
    root = layout.root
    problems: list[Problem] = []
    if not root.is_dir():
        return [
            Problem(
                ERROR,
                root,
                "folder not found; run `python -m pipeline.data` to "
                "create it, or pass the folder that holds train/ and train_masks/",
            )
        ]

    # --- training images and their masks
    if not layout.train_dir.is_dir():
        problems.append(
            Problem(
                ERROR,
                layout.train_dir,
                "folder not found; a dataset needs "
                "train/<car>_<NN>.jpg images (extract train.zip here)",
            )
        )
        files: list[str] = []
    else:
        files = _listdir(layout.train_dir)
    images = [f for f in files if NAME_RE.match(f)]
    strays = [f for f in files if not NAME_RE.match(f) and not f.startswith(".")]
    if layout.train_dir.is_dir() and not images:
        problems.append(
            Problem(
                ERROR,
                layout.train_dir,
                "no <car>_<NN>.jpg images in it; extract train.zip here or regenerate the demo",
            )
        )
    if strays:
        problems.append(
            Problem(
                WARNING,
                layout.train_dir,
                f"{len(strays)} file(s) not named <12 hex>_<NN>.jpg are ignored: {_few(strays)}",
            )
        )

    if not layout.mask_dir.is_dir():
        if images:
            problems.append(
                Problem(
                    ERROR,
                    layout.mask_dir,
                    "folder not found; every training "
                    "image needs a mask here (extract train_masks.zip)",
                )
            )
        masks: list[str] = []
    else:
        masks = [f for f in _listdir(layout.mask_dir) if f.endswith(MASK_SUFFIX)]
    mask_set, image_set = set(masks), set(images)
    for img in images if layout.mask_dir.is_dir() else []:
        if mask_name(img) not in mask_set:
            problems.append(
                Problem(
                    ERROR,
                    layout.mask_path(img),
                    f"missing: the mask of train/{img}; restore it or delete the image",
                )
            )
    for m in masks:
        if image_name(m) not in image_set:
            problems.append(
                Problem(
                    WARNING,
                    layout.mask_dir / m,
                    f"has no image "
                    f"train/{image_name(m)}; it is ignored (restore the image "
                    "or delete the mask)",
                )
            )

    # --- cars: 16 angles each
    angles: dict[str, list[int]] = {}
    for img in images:
        m = NAME_RE.match(img)
        angles.setdefault(m["car"], []).append(int(m["angle"]))
    for car, got in sorted(angles.items()):
        missing = sorted(set(range(1, ANGLES + 1)) - set(got))
        extra = sorted(set(got) - set(range(1, ANGLES + 1)))
        if missing or extra:
            what = f"missing angles {missing}" if missing else f"unexpected angles {extra}"
            problems.append(
                Problem(
                    WARNING,
                    layout.train_dir / f"{car}_*.jpg",
                    f"car {car} has {len(got)} of {ANGLES} angles ({what}); "
                    "it can train, but restore the rest for complete cars",
                )
            )

    # --- every image and mask decoded once: sizes, truncation, mask values
    if check_sizes and images:
        jobs = [("image", layout.train_dir / img) for img in images]
        jobs += [("mask", layout.mask_path(img)) for img in images if mask_name(img) in mask_set]
        outcomes = _decode_all(jobs, "decode train", progress)
        problems += [Problem(ERROR, path, why) for (_, path), (_, why) in zip(jobs, outcomes)
                     if why]
        image_sizes = [size for (kind, _), (size, _) in zip(jobs, outcomes)
                       if kind == "image" and size]
        reference = expected or (
            Counter(image_sizes).most_common(1)[0][0] if image_sizes else None)
        for (kind, path), (size, _) in zip(jobs, outcomes):
            if size and reference and size != tuple(reference):
                problems.append(Problem(ERROR, path, _size_message(size, reference, kind)))

    problems += _check_train_masks_csv(layout, image_set)
    problems += _check_metadata(layout, sorted(angles))
    problems += _check_test(layout, check_sizes, expected, progress)
    return sorted(problems, key=lambda p: p.severity != ERROR)


def _size_message(size, reference, what: str) -> str:
    return (
        f"{what} is {size[1]}x{size[0]} (width x height), expected "
        f"{reference[1]}x{reference[0]}; use the original Kaggle files, "
        "not resized copies"
    )


def _check_train_masks_csv(layout: Layout, images: set[str]) -> list[Problem]:
    """``train_masks.csv`` is optional for training (the GIFs are read) but must agree."""
    path = layout.train_masks_csv
    if not path.is_file():
        return [
            Problem(
                WARNING,
                path,
                "not found; training reads the GIF masks, so this only "
                "matters for tools that want the RLE (extract train_masks.csv.zip)",
            )
        ]
    try:
        names = pd.read_csv(path, usecols=["img"], dtype=str)["img"]
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return [
            Problem(
                WARNING,
                path,
                "not a CSV with a header 'img,rle_mask'; re-extract "
                "train_masks.csv.zip or delete it",
            )
        ]
    listed = set(names)
    out = []
    unlisted = sorted(images - listed)
    if unlisted:
        out.append(
            Problem(
                WARNING,
                path,
                f"has no row for {len(unlisted)} training image(s) "
                f"({_few(unlisted)}); the GIF masks are used, so training is fine",
            )
        )
    absent = sorted(listed - images)
    if absent:
        out.append(
            Problem(
                WARNING,
                path,
                f"lists {len(absent)} image(s) not in train/ ({_few(absent)}); they are ignored",
            )
        )
    return out


def _check_metadata(layout: Layout, cars: list[str]) -> list[Problem]:
    path = layout.metadata_csv
    if not path.is_file():
        return [
            Problem(
                WARNING,
                path,
                "not found; folds cannot stratify by make (every car "
                "is 'unknown'); extract metadata.csv.zip here",
            )
        ]
    try:
        ids = set(pd.read_csv(path, usecols=["id"], dtype=str)["id"])
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return [
            Problem(
                WARNING,
                path,
                "not a CSV with an 'id' column (expected "
                "id,year,make,model,trim1,trim2); re-extract metadata.csv.zip",
            )
        ]
    unknown = [c for c in cars if c not in ids]
    if unknown:
        return [
            Problem(
                WARNING,
                path,
                f"has no row for {len(unknown)} car(s) "
                f"({_few(unknown)}); their make is 'unknown' for fold stratification",
            )
        ]
    return []


def _check_test(layout: Layout, check_sizes: bool, expected, progress: bool) -> list[Problem]:
    """Test images are needed only for a submission: problems here are warnings."""
    out = []
    files = {f for f in _listdir(layout.test_dir) if NAME_RE.match(f)}
    names: list[str] = []
    path = layout.sample_submission_csv
    if not path.is_file():
        out.append(
            Problem(
                WARNING,
                path,
                "not found; it names the test images and their "
                "order, so no submission can be made (extract "
                "sample_submission.csv.zip); training is unaffected",
            )
        )
    else:
        try:
            names = pd.read_csv(path, usecols=["img"], dtype=str)["img"].tolist()
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
            return out + [
                Problem(
                    WARNING,
                    path,
                    "not a CSV with a header 'img,rle_mask'; re-extract sample_submission.csv.zip",
                )
            ]
        missing = [n for n in names if n not in files]
        if missing:
            out.append(
                Problem(
                    WARNING,
                    layout.test_dir,
                    f"{len(missing)} of {len(names)} test images "
                    f"named in sample_submission.csv are missing ({_few(missing)}); "
                    "training works, a submission needs them (extract test.zip)",
                )
            )
    if check_sizes and files:
        # every listed test image: its end marker; a spread-out sample: every pixel and the size
        ordered = sorted(files & set(names)) if names else sorted(files)
        sample = set(ordered[:: max(1, len(ordered) // TEST_SIZE_SAMPLE)][:TEST_SIZE_SAMPLE])
        jobs = [("image" if n in sample else "tail", layout.test_dir / n) for n in ordered]
        outcomes = _decode_all(jobs, "check test", progress)
        broken = [(path, why) for (_, path), (_, why) in zip(jobs, outcomes) if why]
        out += [Problem(WARNING, path, why) for path, why in broken[:TEST_LISTED]]
        if len(broken) > TEST_LISTED:
            rest = [path.name for path, _ in broken[TEST_LISTED:]]
            out.append(Problem(WARNING, layout.test_dir,
                               f"{len(rest)} more test images are truncated or corrupt "
                               f"({_few(rest)}); re-extract test.zip before a submission"))
        for (_, path), (size, _) in zip(jobs, outcomes):
            if size and expected and size != tuple(expected):
                out.append(Problem(WARNING, path, _size_message(size, expected, "test image")))
    return out


def summary_of(root: str | Path, problems: list[Problem]) -> Summary:
    """Counts for the report line; cheap (directory listings and one header)."""
    layout = Layout(root)
    images = [f for f in _listdir(layout.train_dir) if NAME_RE.match(f)]
    tests = [f for f in _listdir(layout.test_dir) if NAME_RE.match(f)]
    size = None
    if images:
        try:
            w, h = image_size(layout.train_dir / images[0])
            size = (h, w)
        except PipelineError:
            pass
    return Summary(
        root=layout.root,
        train_images=len(images),
        train_cars=len({f[:12] for f in images}),
        test_images=len(tests),
        size=size,
        warnings=sum(p.severity == WARNING for p in problems),
    )


def check(
    root: str | Path,
    check_sizes: bool = True,
    expected: tuple[int, int] | None = (FULL_HEIGHT, FULL_WIDTH),
    echo=print,
    progress: bool = False,
) -> Summary:
    """Validate ``root``: ``echo`` each warning, raise one ``PipelineError`` line for errors.

    The error line holds the number of errors and the first three of them.
    """
    problems = validate(root, check_sizes=check_sizes, expected=expected, progress=progress)
    errors = [p for p in problems if p.severity == ERROR]
    for p in problems:
        if p.severity == WARNING and echo is not None:
            echo(str(p))
    if len(errors) == 1:
        raise PipelineError(f"{errors[0].path}: {errors[0].message}")
    if errors:
        first = " | ".join(f"{p.path}: {p.message}" for p in errors[:3])
        more = f" | ... and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise PipelineError(
            f"{root}: {len(errors)} problems make this dataset unusable: {first}{more}"
        )
    return summary_of(root, problems)
