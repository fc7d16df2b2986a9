"""Where every output of a training run lives: the one place that knows the run layout.

    <checkpoints>/<label>/fold<K>/best.pt    best validation Dice (fold -1: the last epoch)
    <checkpoints>/<label>/fold<K>/last.pt    last epoch and the state to resume from
    <checkpoints>/<label>/fold<K>/refiner.pt its edge refiner (pipeline.refine, refine.train)
    <checkpoints>/<label>/fold<K>/phase<I>/  an earlier phase of train.progressive: best.pt,
                                             last.pt and record.json (its training record)
    <metrics>/<label>/fold<K>.json           the training record (pipeline.records.TrainRecord)
    <live>/<label>/fold<K>/                  DVCLive per-epoch metrics and curves.png
    <live>/<label>/fold<K>/phase<I>/         the same for an earlier phase
    <metrics>/<label>/cv.json                out-of-fold summary (pipeline.records.CVSummary)
    <reports>/<label>/                       evaluation report: per-image CSV, PNGs

``<label>`` is ``model.name`` (or arch[-encoder]); ``fold -1`` trains on every image.
``dvc.yaml`` names the same roots once, in its ``vars``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError

FOLD_DIR = re.compile(r"^fold(-?\d+)$")
REFINER = "refiner.pt"
FOLDS_FILE = Path("folds/folds.csv")  # the folds stage's output, every other stage's input


@dataclass(frozen=True)
class Roots:
    """The four output roots; each stage CLI takes them as options with these defaults."""

    checkpoints: Path = Path("checkpoints")
    metrics: Path = Path("metrics")
    live: Path = Path("dvclive")
    reports: Path = Path("reports")

    def model(self, label: str) -> ModelPaths:
        return ModelPaths(label, self)

    def run(self, label: str, fold: int) -> RunPaths:
        return RunPaths(label, fold, self)


@dataclass(frozen=True)
class ModelPaths:
    """Outputs shared by every fold of one model label."""

    label: str
    roots: Roots = field(default_factory=Roots)

    @property
    def cv_summary(self) -> Path:
        return self.roots.metrics / self.label / "cv.json"

    @property
    def report_dir(self) -> Path:
        return self.roots.reports / self.label

    def fold_checkpoints(self, which: str = "best") -> dict[int, Path]:
        """``{fold: <checkpoints>/<label>/fold<K>/<which>.pt}`` of the runs that exist, by fold
        (fold -1, trained on every image, included when present)."""
        found = {}
        for path in (self.roots.checkpoints / self.label).glob(f"fold*/{which}.pt"):
            match = FOLD_DIR.match(path.parent.name)
            if match:
                found[int(match[1])] = path
        return dict(sorted(found.items()))

    def training_records(self) -> dict[int, Path]:
        """``{fold: <metrics>/<label>/fold<K>.json}`` that exist, by fold."""
        found = {}
        for path in (self.roots.metrics / self.label).glob("fold*.json"):
            match = FOLD_DIR.match(path.stem)
            if match:
                found[int(match[1])] = path
        return dict(sorted(found.items()))


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run: model ``label`` trained on fold ``fold`` (``phase``: an earlier
    phase of a progressive run, kept in a ``phase<I>`` subfolder; None: the run's final one)."""

    label: str
    fold: int
    roots: Roots = field(default_factory=Roots)
    phase: int | None = None

    def phase_paths(self, index: int) -> RunPaths:
        """The paths of this run's earlier phase ``index`` (``train.progressive``)."""
        return dataclasses.replace(self, phase=index)

    @property
    def checkpoint_dir(self) -> Path:
        run = self.roots.checkpoints / self.label / f"fold{self.fold}"
        return run if self.phase is None else run / f"phase{self.phase}"

    @property
    def best(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def refiner(self) -> Path:
        return refiner_beside(self.best)

    @property
    def record(self) -> Path:
        if self.phase is not None:  # beside its checkpoints: the metrics root holds DVC's
            return self.checkpoint_dir / "record.json"
        return self.roots.metrics / self.label / f"fold{self.fold}.json"

    @property
    def live_dir(self) -> Path:
        run = self.roots.live / self.label / f"fold{self.fold}"
        return run if self.phase is None else run / f"phase{self.phase}"

    @property
    def report_dir(self) -> Path:
        return self.roots.reports / self.label


def fold_of(checkpoint: str | Path) -> int:
    """The fold a checkpoint at ``.../fold<K>/<name>.pt`` was validated on."""
    match = FOLD_DIR.match(Path(checkpoint).parent.name)
    if not match:
        raise PipelineError(
            f"{checkpoint}: cannot tell which fold it validates (its folder is not fold<K>); "
            "use --all-images to score it on a whole labelled folder"
        )
    return int(match[1])


def refiner_beside(checkpoint: str | Path) -> Path:
    """The edge refiner trained for ``checkpoint``: ``refiner.pt`` in the same folder."""
    return Path(checkpoint).with_name(REFINER)


def refine_command(checkpoint: str | Path) -> str:
    """The command that trains the refiner of ``<root>/<label>/fold<K>/<name>.pt``."""
    path = Path(checkpoint)
    match = FOLD_DIR.match(path.parent.name)
    if not match:
        return "python -m pipeline.refine --fold K --checkpoints ROOT"
    return (f"python -m pipeline.refine -m {path.parent.parent.name} --fold {match[1]} "
            f"--checkpoints {path.parent.parent.parent}")


def ensemble_checkpoints(given, model: ModelPaths) -> list[Path]:
    """The checkpoints named on the command line (each must exist), else the fold ensemble:
    the ``best.pt`` of every validated fold of ``model``, the models whose out-of-fold Dice is
    the CV score. A ``fold -1`` model (trained on every image) has no score of its own, so it
    joins an ensemble only when named."""
    if given:
        missing = [str(p) for p in given if not Path(p).is_file()]
        if missing:
            raise PipelineError(f"{missing[0]}: checkpoint not found; check --checkpoint")
        return [Path(p) for p in given]
    found = [p for fold, p in model.fold_checkpoints().items() if fold >= 0]
    if not found:
        raise PipelineError(
            f"no checkpoints found at {model.roots.checkpoints / model.label}/fold<K>/best.pt; "
            "train the folds first (python -m pipeline.train --fold K), pass --model for "
            "another model, or --checkpoint PATH"
        )
    return found
