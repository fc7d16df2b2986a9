"""A pseudo-label folder (written by ``python -m pipeline.pseudo``) as extra training rows.

The folder is in Kaggle layout and holds only the images the ensemble was confident about:

    <root>/train/<car>_<NN>.jpg             a link to (or copy of) the predicted photo
    <root>/train_masks/<car>_<NN>_mask.gif  the predicted mask
    <root>/train_masks.csv                  img,rle_mask of the same masks
    <root>/pseudo.json                      the report: the rule and every image seen, kept or not

Its rows are added to the training rows of a fold, never to its validation rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.data.layout import Layout, train_index
from pipeline.errors import PipelineError

PSEUDO_REPORT = "pseudo.json"
PSEUDO_FOLD = -1  # the ``fold`` of a pseudo-labelled row: it belongs to no validation fold


def read_pseudo_report(root: str | Path) -> dict:
    """``<root>/pseudo.json``; one line when the folder is not a finished pseudo-label folder."""
    path = Path(root) / PSEUDO_REPORT
    if not path.is_file():
        raise PipelineError(f"{path}: not found; {root} is not a finished pseudo-label folder "
                            f"(run `python -m pipeline.pseudo --out {root}`)")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("images"), dict):
        raise PipelineError(f"{path}: not a pseudo-label report (no 'images'); re-run "
                            "python -m pipeline.pseudo")
    return report


def pseudo_rows(root: str | Path, training: Iterable[str] = ()) -> pd.DataFrame:
    """Training rows for the kept images of the pseudo-label folder ``root``, in name order.

    Columns are those of :func:`pipeline.training.loaders.run_rows` (the train index's, then
    ``fold`` = -1), with ``image_path`` and ``mask_path`` inside ``root``. ``training``: the
    names of the fold's labelled training images; a pseudo image among them is refused (one
    photo, two masks). A validation image may be pseudo-labelled (the transductive check: fold
    K's held-out photos): the resized cache keys its folders by the source folders, so its
    real and its predicted mask never share a cached file.
    """
    report = read_pseudo_report(root)
    kept = sorted(name for name, entry in report["images"].items() if entry.get("kept"))
    if not kept:
        return _no_rows()
    index = train_index(root).set_index("img")
    missing = [n for n in kept if n not in index.index or not index.at[n, "mask_path"]]
    if missing:
        raise PipelineError(
            f"{Layout(root).train_dir}: {len(missing)} kept image(s) (e.g. {missing[0]}) lack "
            f"their photo or mask; re-run python -m pipeline.pseudo --out {root}")
    both = sorted(set(kept) & set(training))
    if both:
        raise PipelineError(
            f"{root}: {len(both)} pseudo-labelled image(s) (e.g. {both[0]}) are also labelled "
            "training images of this fold; pseudo-label unlabelled photos (test/, or the "
            "fold's held-out ones with --folds --fold)")
    return index.loc[kept].reset_index().assign(fold=PSEUDO_FOLD)


def _no_rows() -> pd.DataFrame:
    """No rows, the columns of :func:`pseudo_rows`."""
    columns = ["img", "car_id", "angle", "image_path", "mask_path", "make", "model", "fold"]
    return pd.DataFrame(columns=columns).astype({"angle": int, "fold": int})
