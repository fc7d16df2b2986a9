"""Per-epoch experiment tracking: DVCLive metrics (``Live(dvcyaml=None)``, no experiment saved,
no Studio, no git) and a matplotlib PNG of the curves, both readable offline.

The history lives in the checkpoint; on ``--resume`` the DVCLive folder is rewritten from it,
so the logged curves always match the checkpoint even after a kill -9 between the two.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.figures import pyplot, save_figure

# DVCLive must never reach the network or a git/DVC experiment from inside a training run.
os.environ.setdefault("DVC_STUDIO_OFFLINE", "true")
os.environ.setdefault("DVCLIVE_OPEN", "false")

PLOT_NAME = "curves.png"
UNLOGGED = ("epoch", "val_images", "train_batches")  # the step, constants
PLOTTED = (("train_loss", "val_loss"), ("val_dice",), ("lr",))


def _offline_live(live_dir: Path):
    """A DVCLive ``Live`` that writes only inside ``live_dir``.

    Stock ``Live`` opens the enclosing DVC repo to name an experiment, and in a git repository
    without ``.dvc/`` it even runs ``dvc init``. A training stage (often run by ``dvc repro``,
    which owns dvc.yaml and the experiment) must do neither, so repo discovery is skipped.
    """
    from dvclive import Live

    class OfflineLive(Live):
        def _init_dvc(self):
            self._dvc_repo = None
            self._dvc_file = self._init_dvc_file()

    return OfflineLive(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None,
                       monitor_system=False)


class Tracker:
    """Logs one row of metrics per epoch to ``live_dir``; a no-op when ``enabled`` is False."""

    def __init__(self, live_dir: str | Path, *, enabled: bool = True, use_dvclive: bool = True,
                 params: dict | None = None):
        self.dir = Path(live_dir)
        self.enabled = enabled
        self.live = None
        self.rows: list[dict] = []
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if use_dvclive:
            import logging

            logging.getLogger("dvclive").setLevel(logging.ERROR)
            self.live = _offline_live(self.dir)
            if params:
                self.live.log_params(params)

    def replay(self, history: list[dict]) -> None:
        """Re-log the epochs a resumed run already finished (without redrawing each time)."""
        for row in history:
            self.log_epoch(row, plot=False)
        if history:
            self.plot()

    def log_epoch(self, row: dict, plot: bool = True) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if self.live is not None:
            for key, value in row.items():
                if key not in UNLOGGED and value is not None and math.isfinite(value):
                    self.live.log_metric(key, value, plot=True)
            self.live.next_step()
        if plot:
            self.plot()

    def plot(self) -> Path | None:
        """Write ``curves.png`` (loss, val Dice, lr per epoch) atomically."""
        if not self.enabled or not self.rows:
            return None
        plt = pyplot()
        epochs = [r["epoch"] + 1 for r in self.rows]
        fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3))
        for ax, keys in zip(axes, PLOTTED):
            for key in keys:
                ys = [r.get(key) for r in self.rows]
                if any(y is not None for y in ys):
                    ax.plot(epochs, [math.nan if y is None else y for y in ys], marker="o",
                            label=key)
            ax.set_xlabel("epoch")
            ax.set_title(", ".join(keys))
            ax.grid(alpha=0.3)
            if keys == ("lr",):
                ax.set_yscale("log")
            if len(keys) > 1:
                ax.legend()
        fig.tight_layout()
        return save_figure(fig, self.dir / PLOT_NAME, dpi=80)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
