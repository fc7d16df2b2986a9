"""Headless matplotlib for the report figures: the Agg backend (no display needed) and atomic
PNG files."""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, **savefig) -> Path:
    """Write ``fig`` as a PNG file atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig)
    pyplot().close(fig)
    return Path(path)
