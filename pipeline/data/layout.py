"""The Kaggle Carvana folder layout and the image index built from it.

    <root>/train/<car>_<NN>.jpg              1918x1280 RGB JPEG, NN = angle 01..16
    <root>/train_masks/<car>_<NN>_mask.gif   palette GIF, values {0, 1}
    <root>/train_masks.csv                   img,rle_mask
    <root>/metadata.csv                      id,year,make,model,trim1,trim2
    <root>/sample_submission.csv             img,rle_mask (the test names in Kaggle's order)
    <root>/test/<car>_<NN>.jpg

A car id is the 12-hex-digit prefix of an image name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError

ANGLES = 16
NAME_RE = re.compile(r"^(?P<car>[0-9a-f]{12})_(?P<angle>\d{2})\.jpg$")


def parse_name(img: str) -> tuple[str, int]:
    """``"00087a6bd4dc_03.jpg"`` -> ``("00087a6bd4dc", 3)``."""
    m = NAME_RE.match(img)
    if not m:
        raise PipelineError(f"{img}: not a Carvana image name (expected <12 hex>_<NN>.jpg)")
    return m["car"], int(m["angle"])


def mask_name(img: str) -> str:
    """``"x_01.jpg"`` -> ``"x_01_mask.gif"``."""
    return img[: -len(".jpg")] + "_mask.gif"


def image_name(mask: str) -> str:
    """``"x_01_mask.gif"`` -> ``"x_01.jpg"``."""
    return mask[: -len("_mask.gif")] + ".jpg"


@dataclass(frozen=True)
class Layout:
    """Paths of one Kaggle-layout folder."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def mask_dir(self) -> Path:
        return self.root / "train_masks"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"

    @property
    def train_masks_csv(self) -> Path:
        return self.root / "train_masks.csv"

    @property
    def metadata_csv(self) -> Path:
        return self.root / "metadata.csv"

    @property
    def sample_submission_csv(self) -> Path:
        return self.root / "sample_submission.csv"

    def image_path(self, img: str, split: str = "train") -> Path:
        return (self.train_dir if split == "train" else self.test_dir) / img

    def mask_path(self, img: str) -> Path:
        return self.mask_dir / mask_name(img)


def read_metadata(layout: Layout) -> pd.DataFrame:
    """``metadata.csv`` indexed by car id (empty frame when the file is absent)."""
    if not layout.metadata_csv.is_file():
        return pd.DataFrame(columns=["make", "model"]).rename_axis("id")
    try:
        meta = pd.read_csv(layout.metadata_csv, dtype=str)
    except Exception as exc:  # noqa: BLE001 -- pandas raises many types for a broken CSV
        raise PipelineError(f"{layout.metadata_csv}: cannot be parsed as CSV ({exc})") from None
    if "id" not in meta.columns:
        raise PipelineError(f"{layout.metadata_csv}: no 'id' column (expected id,year,make,...)")
    return meta.set_index("id")


def train_index(root: str | Path) -> pd.DataFrame:
    """One row per training image that has a mask, sorted by name.

    Columns: img, car_id, angle, image_path, mask_path, make, model.
    Problems (missing masks, stray files) are reported by :func:`pipeline.data.validate.validate`;
    this function only needs a non-empty ``train/``.
    """
    layout = Layout(root)
    if not layout.train_dir.is_dir():
        raise PipelineError(
            f"{layout.train_dir}: folder not found; run `python -m pipeline.data` first "
            "or point data.root at a folder in Kaggle layout"
        )
    names = sorted(p.name for p in layout.train_dir.glob("*.jpg") if NAME_RE.match(p.name))
    if not names:
        raise PipelineError(f"{layout.train_dir}: no <car>_<NN>.jpg images found")
    meta = read_metadata(layout)
    rows = []
    for img in names:
        car, angle = parse_name(img)
        mask = layout.mask_path(img)
        rows.append(
            {
                "img": img,
                "car_id": car,
                "angle": angle,
                "image_path": str(layout.train_dir / img),
                "mask_path": str(mask) if mask.is_file() else "",
            }
        )
    index = pd.DataFrame(rows)
    for col in ("make", "model"):
        values = meta[col] if col in meta.columns else pd.Series(dtype=str)
        index[col] = index["car_id"].map(values).fillna("unknown")
    return index


def submission_names(root: str | Path) -> list[str]:
    """Test image names in ``sample_submission.csv`` order (the order Kaggle expects)."""
    layout = Layout(root)
    path = layout.sample_submission_csv
    if not path.is_file():
        raise PipelineError(f"{path}: not found; it names the test images and their order")
    try:
        frame = pd.read_csv(path, usecols=["img"], dtype=str)
    except ValueError:
        raise PipelineError(f"{path}: expected a header 'img,rle_mask'") from None
    return frame["img"].tolist()
