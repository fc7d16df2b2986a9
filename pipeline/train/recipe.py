"""A whole training recipe in one run (what ``python -m pipeline.train`` calls): the base phase,
then each continuation phase of ``train.progressive`` started from the previous phase's
``best.pt`` (progressive resizing), then, with ``refine.train``, the edge refiner of the final
``best.pt``.

Phases build on each other: phase I (``train.progressive[I-1]``) is phase I-1's train settings
with the keys it names changed. Each phase is exactly the run that ``python -m pipeline.train``
with those settings and ``train.init_from=<phase I-1's best.pt>`` makes; its config has no phases
of its own, so the final checkpoint's config records the chain through ``init_from``. Earlier
phases write under ``fold<K>/phase<I>/`` (:mod:`pipeline.runs`), the final one the run's usual
``best.pt``, ``last.pt``, record and DVCLive folder.

Resume: an earlier phase is skipped when it finished (its record written) with this run's
settings, images and starting weights (the resume key in its ``best.pt``,
:func:`pipeline.train.trainer.run_key`); the first phase left continues from its ``last.pt``
(which must carry its key too), and every phase after one that trained starts afresh. A
``refiner.pt`` recording the same source (the final ``best.pt`` and the refiner's settings) is
kept.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from pipeline import distributed
from pipeline.config import Config, TrainConfig, from_dict, phase_keys, to_dict
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import load_checkpoint
from pipeline.records import TrainRecord
from pipeline.refine.fit import refiner_key, train_refiner
from pipeline.refine.store import refiner_source
from pipeline.runs import RunPaths
from pipeline.train.loaders import run_rows
from pipeline.train.trainer import Split, check_settings, run_key, train

# The train keys a phase may change (pipeline.config.phase): the input size and the
# optimisation. The rest are settings of the whole run (seed, precision, kernels, workers) or
# set by the chain itself (FIXED).
PHASE_KEYS = tuple(phase_keys(TrainConfig))
FIXED = {"init_from": "each phase starts from the previous phase's best.pt",
         "progressive": "phases do not nest"}


def merge_phase(previous: TrainConfig, changes: dict, index: int) -> TrainConfig:
    """The train settings of phase ``index + 1``: ``previous`` (the phase before) with
    ``changes`` (``train.progressive[index]``) applied and no phases of its own. A key a phase
    may not change, or a value of the wrong type, is one line naming the phase."""
    where = f"train.progressive[{index}]"
    allowed = ", ".join(PHASE_KEYS)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in changes:
        if key not in known:
            close = difflib.get_close_matches(key, PHASE_KEYS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PipelineError(f"{where}: unknown train key '{key}'{hint}; a phase may set: "
                                f"{allowed}")
        if key not in PHASE_KEYS:
            why = FIXED.get(key, "a setting of the whole run: set it in train:")
            raise PipelineError(f"{where}: train.{key} cannot change per phase ({why}); a "
                                f"phase may set: {allowed}")
    return from_dict(TrainConfig, {**to_dict(previous), **changes, "progressive": []},
                     source=where)


@dataclass(frozen=True)
class Phase:
    """One phase of a recipe: the config it trains with and where it writes."""

    cfg: Config
    run: RunPaths


def plan_phases(cfg: Config, run: RunPaths) -> list[Phase]:
    """Every phase of ``cfg``'s run, checked before anything trains: phase 0 is ``cfg.train``
    (with its own ``init_from``), phase I applies ``train.progressive[I-1]`` to phase I-1 and
    starts from its ``best.pt``; the last phase writes to ``run``, the others to its phase
    folders."""
    settings = [dataclasses.replace(cfg.train, progressive=[])]
    for index, changes in enumerate(cfg.train.progressive):
        settings.append(merge_phase(settings[-1], changes, index))
    runs = [run.phase_paths(i) for i in range(len(settings) - 1)] + [run]
    phases = []
    for i, tc in enumerate(settings):
        if i:
            tc = dataclasses.replace(tc, init_from=str(runs[i - 1].best))
            try:
                check_settings(tc)
            except PipelineError as exc:
                raise PipelineError(f"train.progressive[{i - 1}]: {exc}") from None
        phases.append(Phase(dataclasses.replace(cfg, train=tc), runs[i]))
    return phases


def phase_finished(phase: Phase, split: Split) -> bool:
    """Whether a phase ran to its end (its record is written after its last epoch) with the
    settings, images and starting weights it has now (the key in its best.pt)."""
    run, tc = phase.run, phase.cfg.train
    if not (run.record.is_file() and run.best.is_file()):
        return False
    if tc.init_from and not Path(tc.init_from).is_file():
        return False
    return load_checkpoint(run.best).get("key") == run_key(phase.cfg, split)


def train_recipe(cfg: Config, fold: int, *, folds_path, run: RunPaths, resume: bool = False,
                 progress: bool = True, device: str | None = None) -> TrainRecord:
    """Train every phase of ``cfg`` on ``fold`` (:func:`plan_phases`), then the edge refiner
    when ``refine.train`` is set; returns the final phase's training record."""
    phases = plan_phases(cfg, run)
    info = distributed.setup(device)  # once: under torchrun a group cannot be joined twice
    say = print if info.is_main else (lambda *_, **__: None)
    split = Split(*run_rows(cfg.data, fold, folds_path), f"fold {fold} of {folds_path}")
    fresh, record = not resume, None
    try:
        for i, phase in enumerate(phases):
            final = i == len(phases) - 1
            if not fresh and not final and phase_finished(phase, split):
                say(f"phase {i}/{len(phases) - 1} finished: keeping {phase.run.best}",
                    flush=True)
                continue
            if len(phases) > 1:
                tc = phase.cfg.train
                start = f" from {tc.init_from}" if tc.init_from else ""
                epochs = f"{tc.epochs} epoch" + ("s" if tc.epochs != 1 else "")
                say(f"phase {i}/{len(phases) - 1}: {tc.height}x{tc.width}, {epochs}{start}",
                    flush=True)
            if fresh and not final and info.is_main:  # an older run's record must not mark
                phase.run.record.unlink(missing_ok=True)  # this phase finished
            record = train(phase.cfg, fold, folds_path=folds_path, run=phase.run,
                           resume=not fresh, progress=progress, info=info)
            fresh = True  # the phases after this one start from its new weights
    finally:
        distributed.cleanup(info)
    if cfg.refine.train and info.is_main:
        refine_final_model(phases[-1].cfg, fold, Path(folds_path), run, resume=resume,
                           progress=progress, device=info.device)
    return record


def refine_final_model(cfg: Config, fold: int, folds_path: Path, run: RunPaths, *,
                       resume: bool, progress: bool, device) -> None:
    """Train the edge refiner of ``run``'s best.pt (``refine.train``); on resume, keep a
    ``refiner.pt`` trained from the same checkpoint and settings."""
    if resume and refiner_source(run.refiner) == refiner_key(cfg, run.best):
        print(f"edge refiner up to date: keeping {run.refiner}", flush=True)
        return
    result = train_refiner(cfg, fold, folds_path, run, device, progress)
    loss = result.history[-1]["loss"] if result.history else float("nan")
    print(f"wrote {result.path}: {cfg.refine.steps} steps on {result.images} training images "
          f"(coarse {result.coarse[0]}x{result.coarse[1]}), final loss {loss:.4f}, wall "
          f"{result.seconds:.0f} s", flush=True)
