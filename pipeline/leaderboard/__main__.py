"""Where a score would place on the Carvana private leaderboard: ``python -m pipeline.leaderboard``.

The score is a local CV Dice (``--metrics``/``--metrics-glob`` on ``metrics/<label>/cv.json``, a
:class:`pipeline.records.CVSummary`), a number (``--score``), or the Kaggle score of a submitted
file (``--submission F --fetch-kaggle``, which needs the ``kaggle`` package and credentials). It
is compared with milestones of the final private leaderboard (:mod:`pipeline.leaderboard.board`),
or with a whole leaderboard CSV (``--leaderboard-csv``).
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from pipeline import kaggle
from pipeline.errors import PipelineError, one_line_errors
from pipeline.leaderboard.board import (
    FLOOR_SCORE,
    N_TEAMS,
    load_milestones,
    place,
    read_leaderboard_csv,
)
from pipeline.leaderboard.render import ranking_text, write_ranking
from pipeline.records import CVSummary, read_record


def read_cv_score(path: str | Path) -> tuple[str, float]:
    """(label, CV Dice) of a CV summary written by ``python -m pipeline.evaluate``."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path}: metrics file not found; run `python -m pipeline.evaluate` first or pass "
            "--score"
        )
    summary = read_record(path, CVSummary)
    return summary.label, summary.dice


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


def gather_scores(
    scores: Sequence[float],
    metrics: Sequence[Path],
    metrics_glob: str | None,
    submission: Path | None,
    fetch_kaggle: bool,
    competition: str = kaggle.COMPETITION,
) -> list[tuple[str, float]]:
    """(label, score) pairs from every source given on the command line."""
    found: list[tuple[str, float]] = [(f"score {s:g}", float(s)) for s in scores]
    found += [read_cv_score(p) for p in metrics]
    if metrics_glob:
        paths = sorted(globlib.glob(metrics_glob))
        if not paths:
            raise PipelineError(
                f"{metrics_glob}: no metrics file matches; run the evaluate stage first"
            )
        found += [read_cv_score(p) for p in paths]
    if submission is not None:
        if not fetch_kaggle:
            raise PipelineError(
                f"{submission}: only Kaggle knows a test submission's score; add --fetch-kaggle"
            )
        score = kaggle.fetch_score(submission, competition)
        found.append((f"kaggle {Path(submission).name}", score))
    if not found:
        raise PipelineError(
            "nothing to compare: pass --score, --metrics, --metrics-glob or "
            "--submission with --fetch-kaggle"
        )
    return found


@app.command()
@one_line_errors
def main(
    score: Annotated[list[float] | None, typer.Option(help="A Dice score to place.")] = None,
    metrics: Annotated[
        list[Path] | None, typer.Option(help="A CV metrics JSON, e.g. metrics/unet/cv.json.")
    ] = None,
    metrics_glob: Annotated[
        str | None, typer.Option(help="Compare every match, e.g. 'metrics/*/cv.json'.")
    ] = None,
    submission: Annotated[
        Path | None, typer.Option(help="A submission file already sent to Kaggle.")
    ] = None,
    fetch_kaggle: Annotated[
        bool, typer.Option(help="Ask Kaggle (kaggle package) for --submission's score.")
    ] = False,
    competition: Annotated[str, typer.Option(help="Kaggle competition slug.")] = kaggle.COMPETITION,
    leaderboard_csv: Annotated[
        Path | None,
        typer.Option(help="A full leaderboard from `kaggle competitions leaderboard -d`."),
    ] = None,
    milestones: Annotated[
        Path | None, typer.Option(help="rank,score,note CSV (default: the packaged one).")
    ] = None,
    n_teams: Annotated[int, typer.Option(help="Teams on the board (milestones only).")] = N_TEAMS,
    out: Annotated[
        list[Path] | None, typer.Option(help="Write a report: .md (Markdown) or .json.")
    ] = None,
) -> None:
    """Print each score's estimated private-leaderboard rank, percentile and medal zone."""
    found = gather_scores(score or [], metrics or [], metrics_glob, submission, fetch_kaggle,
                          competition)
    if leaderboard_csv is not None:
        board = read_leaderboard_csv(leaderboard_csv)
        teams, floor = len(board), board[-1].score
        source = f"{leaderboard_csv} ({teams} teams)"
    else:
        board = load_milestones(milestones)
        teams, floor = n_teams, FLOOR_SCORE
        source = f"{milestones or 'Carvana private leaderboard milestones'} ({teams} teams)"
    results = [place(s, board, teams, floor, label) for label, s in found]
    typer.echo(f"compared with {source}")
    for r in results:
        typer.echo(ranking_text(r))
    for path in out or []:
        write_ranking(results, source, path)
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
