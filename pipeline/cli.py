"""Command-line options every stage shares, declared once (Typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="YAML config(s), in order (default configs/base.yaml)."),
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model YAML, or its name in configs/models/."),
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto).")]
OverridesArgument = Annotated[
    list[str] | None, typer.Argument(help="section.key=value overrides, e.g. train.epochs=3.")
]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]
