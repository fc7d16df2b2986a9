"""Copy real Carvana cars into a small Kaggle-layout folder that fits a size budget.

    python scripts/copy_cars.py SRC DST CARS BUDGET_BYTES

Up to CARS training cars (in sorted id order) with their 16 images and GIF masks, while the
copied bytes stay within BUDGET_BYTES; SRC's test images; ``train_masks.csv``, ``metadata.csv``
and ``sample_submission.csv`` restricted to what was copied. Used by ``scripts/gpu_run.sh``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

MIN_CARS = 10  # fewer would not leave a training set beside 5 held-out cars


def copy_cars(src: Path, dst: Path, n: int, budget: int) -> list[str]:
    masks = pd.read_csv(src / "train_masks.csv")
    masks["car"] = masks["img"].str[:12]
    tests = sorted(p.name for p in (src / "test").glob("*.jpg"))
    for sub in ("train", "train_masks", "test"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    used = 0
    for img in tests:
        shutil.copy2(src / "test" / img, dst / "test" / img)
        used += (src / "test" / img).stat().st_size
    cars: list[str] = []
    for car, rows in masks.groupby("car", sort=True):
        files = [(src / "train" / img, dst / "train" / img) for img in rows["img"]]
        gifs = rows["img"].str.replace(".jpg", "_mask.gif", regex=False)
        files += [(src / "train_masks" / g, dst / "train_masks" / g) for g in gifs]
        size = sum(a.stat().st_size for a, _ in files)
        size += int(rows["img"].str.len().sum() + rows["rle_mask"].str.len().sum()) + 2 * len(rows)
        if len(cars) == n or used + size > budget:
            break
        for a, b in files:
            shutil.copy2(a, b)
        cars.append(car)
        used += size
    if len(cars) < min(n, MIN_CARS):
        sys.exit(f"only {len(cars)} cars fit in {budget / 2**20:.1f} MiB; ask for fewer or "
                 "free space in the working tree")
    kept = masks[masks["car"].isin(cars)]
    kept[["img", "rle_mask"]].to_csv(dst / "train_masks.csv", index=False)
    pd.DataFrame({"img": tests, "rle_mask": "1 1"}).to_csv(dst / "sample_submission.csv",
                                                           index=False)
    meta = pd.read_csv(src / "metadata.csv", dtype=str)
    ids = set(cars) | {t[:12] for t in tests}
    meta[meta["id"].isin(ids)].to_csv(dst / "metadata.csv", index=False)
    print(f"{len(cars)} cars ({len(kept)} images and masks; asked for {n}) and {len(tests)} "
          f"test image(s) -> {dst}")
    return cars


if __name__ == "__main__":
    copy_cars(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
