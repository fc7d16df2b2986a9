"""The options every stage shares, declared once, and the config a stage builds from them.

A stage's command is ``@stage(app, "config", "model", ...)`` over a function whose first
parameter receives the parsed :class:`StageOptions`; its other parameters are its own options.
The shared ones are added here, with the same names, help and defaults on every stage (the paths'
defaults are :mod:`pipeline.runs`'s, so a stage run without options reads and writes where
``dvc.yaml`` does), and a :class:`~pipeline.errors.PipelineError` becomes one ``error:`` line.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import Config, load_config, model_path
from pipeline.errors import one_line_errors
from pipeline.runs import FOLDS_FILE, Roots

ConfigOption = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="YAML config(s) layered on configs/base.yaml, in order "
                                        "(e.g. a profile)."),
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

# name -> (annotation, default): every shared option; ``overrides`` always comes last.
SHARED = {
    "config": (ConfigOption, None),
    "model": (ModelOption, None),
    "data_root": (Annotated[Path | None, typer.Option(
        help="Kaggle-layout data folder (default: data.root).")], None),
    "folds": (Annotated[Path, typer.Option(help="Folds CSV (python -m pipeline.folds).")],
              FOLDS_FILE),
    "checkpoints": (Annotated[Path, typer.Option(
        help="Checkpoint root: <model>/fold<K>/.")], Roots.checkpoints),
    "metrics": (Annotated[Path, typer.Option(help="Metrics root: <model>/fold<K>.json.")],
                Roots.metrics),
    "live": (Annotated[Path, typer.Option(help="DVCLive root: <model>/fold<K>/.")], Roots.live),
    "reports": (Annotated[Path, typer.Option("--out-dir", help="Report root: <model>/.")],
                Roots.reports),
    "device": (DeviceOption, None),
    "progress": (ProgressOption, True),
    "overrides": (OverridesArgument, None),
}


@dataclass(frozen=True)
class StageOptions:
    """The shared options of one stage run, as parsed (the ones a stage did not ask for keep
    their defaults)."""

    config: list[Path] | None = None
    model: str | None = None
    data_root: Path | None = None
    folds: Path = FOLDS_FILE
    checkpoints: Path = Roots.checkpoints
    metrics: Path = Roots.metrics
    live: Path = Roots.live
    reports: Path = Roots.reports
    device: str | None = None
    progress: bool = True
    overrides: list[str] | None = None

    def cfg(self, data_root: Path | None = None) -> Config:
        """The run's config: the defaults, ``--config`` files, ``--model``, the overrides,
        then ``--data-root`` (or ``data_root``) as ``data.root``."""
        return stage_config(self.config, self.model, self.overrides, data_root or self.data_root)

    @property
    def roots(self) -> Roots:
        return Roots(checkpoints=self.checkpoints, metrics=self.metrics, live=self.live,
                     reports=self.reports)


def stage(app: typer.Typer, *shared: str, name: str | None = None):
    """Register the decorated function as a command of ``app`` with the shared options
    ``shared`` (names of :data:`SHARED`) after its own; it is called with the
    :class:`StageOptions` first."""
    unknown = set(shared) - set(SHARED)
    if unknown:
        raise ValueError(f"unknown shared options {sorted(unknown)}")

    def decorate(fn):
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        names = [n for n in SHARED if n in shared]  # one order on every stage
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=SHARED[n][1],
                                   annotation=SHARED[n][0]) for n in names]

        @functools.wraps(fn)
        def command(**kwargs):
            opts = StageOptions(**{n: kwargs.pop(n) for n in names})
            return fn(opts, **kwargs)

        command.__signature__ = inspect.Signature(
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added)
        command.__annotations__ = {}  # the signature above holds them, evaluated
        return app.command(name)(one_line_errors(command))

    return decorate


def config_paths(config: list[Path] | None, model: str | None) -> list[str]:
    """The YAML files a stage layers on the defaults: the ``--config`` files, then the
    ``--model`` file (a path, or a name in ``configs/models/``)."""
    return [str(p) for p in config or []] + ([model_path(str(model))] if model else [])


def stage_config(config: list[Path] | None = None, model: str | None = None,
                 overrides: list[str] | None = None, data_root: Path | None = None) -> Config:
    """The config of a stage run: the defaults, the ``--config`` files, ``--model``, the
    overrides, and ``--data-root`` (which sets ``data.root``)."""
    extra = [f"data.root={data_root}"] if data_root is not None else []
    return load_config(config_paths(config, model), [*(overrides or []), *extra])

