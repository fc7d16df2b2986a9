"""``python -m pipeline.benchmark``: one Typer app, one subcommand module each."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

# Each module exposes register(app), which adds its command(s).
for name in ("rle", "models", "predict", "compare"):
    importlib.import_module(f"pipeline.benchmark.{name}").register(app)

if __name__ == "__main__":
    app()
