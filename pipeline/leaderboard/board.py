"""Where a score would place on a leaderboard: milestones (known places) and the pure math of
ranks and medal zones.

The milestones are those of the final Carvana private leaderboard (735 teams, shipped in
``pipeline/resources/leaderboard.csv`` with their source), or a whole leaderboard CSV
downloaded by ``kaggle competitions leaderboard carvana-image-masking-challenge -d``.

Conventions:

* rank is "1 + the number of teams with a strictly higher score": a score equal to a tied
  milestone gets the best rank of the tie (0.9971 -> 10th, not 11th).
* between two milestones the rank is interpolated linearly in score and rounded UP, so a score
  strictly between the r-th and (r+1)-th team of a complete leaderboard is ranked r+1 exactly, and
  between sparse milestones the estimate errs on the pessimistic side.
* below the last milestone (511th, 0.988423) nothing is known. We ASSUME the board continues
  linearly down to the last team (735th) at Dice ``FLOOR_SCORE`` = 0.95 and call every lower
  score 735th. The tail between 496th and 511th falls by 0.0003 Dice per place; our assumed
  0.00017 per place is flatter, which puts a weak score lower than a steeper tail would: the
  estimate is meant to be conservative, and it is only an estimate.
* medal zones follow Kaggle's progression rules (kaggle.com/progression; "percentage
  calculations are rounded down"), see :func:`medal_cutoffs`. For 735 teams: gold 1-11,
  silver 12-50, bronze 51-100.
"""

from __future__ import annotations

import io
import itertools
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.kaggle import COMPETITION

N_TEAMS = 735
FLOOR_SCORE = 0.95  # assumed Dice of the 735th team; see the module docstring


@dataclass(frozen=True)
class Milestone:
    """One known place on a leaderboard (a team's score, or a published cut-off)."""

    rank: int
    score: float
    note: str = ""


# --------------------------------------------------------------------------- milestones


def milestones_path() -> Path:
    """The packaged ``pipeline/resources/leaderboard.csv``."""
    return Path(str(resources.files("pipeline.resources").joinpath("leaderboard.csv")))


def load_milestones(path: str | Path | None = None) -> list[Milestone]:
    """Read a ``rank,score,note`` CSV (``#`` lines are comments); default: the packaged file.

    Checks that ranks increase and scores never increase with rank.
    """
    path = Path(path) if path is not None else milestones_path()
    if not path.is_file():
        raise PipelineError(f"{path}: milestones file not found")
    try:
        frame = pd.read_csv(path, comment="#", dtype={"note": str}, keep_default_na=False)
        rows = [
            Milestone(int(r["rank"]), float(r["score"]), str(r.get("note", "")))
            for r in frame.to_dict("records")
        ]
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise PipelineError(
            f"{path}: expected CSV columns rank,score,note with numeric rank and score ({exc})"
        ) from None
    return _check_milestones(rows, str(path))


def _check_milestones(rows: Sequence[Milestone], source: str) -> list[Milestone]:
    rows = sorted(rows, key=lambda m: m.rank)
    if not rows:
        raise PipelineError(f"{source}: no milestones")
    for a, b in itertools.pairwise(rows):
        if a.rank == b.rank or b.score > a.score:
            raise PipelineError(
                f"{source}: ranks must be distinct and scores must not increase with rank "
                f"(rank {a.rank} {a.score} vs rank {b.rank} {b.score})"
            )
    return list(rows)


# --------------------------------------------------------------------------- pure math


def medal_cutoffs(n_teams: int) -> dict[str, int]:
    """Last rank of each medal zone under Kaggle's rules (percentages rounded down).

    ========  =========  ==========  ===============  ===============
    teams     0-99       100-249     250-999          1000+
    gold      top 10%    top 10      top 10 + 0.2%    top 10 + 0.2%
    silver    top 20%    top 20%     top 50           top 5%
    bronze    top 40%    top 40%     top 100          top 10%
    ========  =========  ==========  ===============  ===============

    For Carvana's 735 teams: gold 10 + floor(1.47) = 11, silver 50, bronze 100.
    """
    if n_teams < 1:
        raise PipelineError(f"the number of teams must be positive, got {n_teams}")
    if n_teams < 100:
        gold, silver, bronze = n_teams * 10 // 100, n_teams * 20 // 100, n_teams * 40 // 100
        gold, silver, bronze = max(1, gold), max(1, silver), max(1, bronze)
    elif n_teams < 250:
        gold, silver, bronze = 10, n_teams * 20 // 100, n_teams * 40 // 100
    elif n_teams < 1000:
        gold, silver, bronze = 10 + n_teams * 2 // 1000, 50, 100
    else:
        gold, silver, bronze = 10 + n_teams * 2 // 1000, n_teams * 5 // 100, n_teams // 10
    return {"gold": gold, "silver": silver, "bronze": bronze}


def zone_for_rank(rank: int, n_teams: int = N_TEAMS) -> str:
    """``"gold"``, ``"silver"``, ``"bronze"`` or ``"none"`` for a final rank."""
    cut = medal_cutoffs(n_teams)
    for zone in ("gold", "silver", "bronze"):
        if rank <= cut[zone]:
            return zone
    return "none"


def _curve(milestones: Sequence[Milestone], n_teams: int, floor: float) -> list[Milestone]:
    """Milestones sorted by rank, with the assumed last team appended when the list stops early."""
    points = sorted(milestones, key=lambda m: m.rank)
    last = points[-1]
    if last.rank < n_teams and floor < last.score:
        points = [*points, Milestone(n_teams, floor, "assumed last team (extrapolated)")]
    return points


def estimate_rank(
    score: float,
    milestones: Sequence[Milestone],
    n_teams: int = N_TEAMS,
    floor: float = FLOOR_SCORE,
) -> tuple[int, str]:
    """(estimated rank, medal zone) of ``score`` on a leaderboard known through ``milestones``.

    Higher scores are better. Exactly a milestone's score -> the best rank holding that score;
    above the first -> 1; between two -> linear in score, rounded up; below the last (and the
    assumed ``floor`` team) -> ``n_teams``.
    """
    points = _curve(milestones, n_teams, floor)
    if score >= points[0].score:
        rank = points[0].rank if score == points[0].score else 1
        return rank, zone_for_rank(rank, n_teams)
    tied = [p.rank for p in points if p.score == score]
    if tied:
        rank = min(tied)
    elif score < points[-1].score:
        rank = n_teams
    else:
        above = [p for p in points if p.score > score][-1]  # the closest better milestone
        below = next(p for p in points if p.score < score)  # the closest worse milestone
        frac = (above.score - score) / (above.score - below.score)
        exact = above.rank + frac * (below.rank - above.rank)
        # Strictly between two milestones: strictly between their ranks (guards float rounding).
        rank = min(below.rank, max(above.rank + 1, math.ceil(exact - 1e-9)))
    rank = min(rank, n_teams)
    return rank, zone_for_rank(rank, n_teams)


def score_for_rank(
    rank: int,
    milestones: Sequence[Milestone],
    n_teams: int = N_TEAMS,
    floor: float = FLOOR_SCORE,
) -> float:
    """The lowest score that :func:`estimate_rank` places at ``rank`` or better (its inverse)."""
    points = _curve(milestones, n_teams, floor)
    if rank <= points[0].rank:
        return points[0].score
    if rank >= points[-1].rank:
        return points[-1].score
    at = [p.score for p in points if p.rank == rank]
    if at:
        return at[0]
    above = [p for p in points if p.rank < rank][-1]
    below = next(p for p in points if p.rank > rank)
    frac = (rank - above.rank) / (below.rank - above.rank)
    return above.score - frac * (above.score - below.score)


def place(
    score: float,
    milestones: Sequence[Milestone],
    n_teams: int = N_TEAMS,
    floor: float = FLOOR_SCORE,
    label: str = "score",
) -> dict[str, Any]:
    """Everything the report prints about one score, as a JSON-ready dict."""
    rank, zone = estimate_rank(score, milestones, n_teams, floor)
    points = sorted(milestones, key=lambda m: m.rank)
    better = [m for m in points if m.score > score]
    worse = [m for m in points if m.score < score]
    cut = medal_cutoffs(n_teams)
    # The next zone up; from gold, the next target is first place.
    target = {"none": "bronze", "bronze": "silver", "silver": "gold", "gold": "first place"}[zone]
    target_rank = 1 if zone == "gold" else cut[target]
    needed = score_for_rank(target_rank, milestones, n_teams, floor)
    return {
        "label": label,
        "score": float(score),
        "rank": rank,
        "n_teams": n_teams,
        "top_percent": 100.0 * rank / n_teams,
        "zone": zone,
        "extrapolated": score < points[-1].score,
        "above": _as_dict(better[-1]) if better else None,
        "below": _as_dict(worse[0]) if worse else None,
        "next_zone": target,
        "next_zone_rank": target_rank,
        "next_zone_score": needed,
        "dice_needed": max(0.0, needed - score),
    }


def _as_dict(m: Milestone) -> dict[str, Any]:
    return {"rank": m.rank, "score": m.score, "note": m.note}


def read_leaderboard_csv(path: str | Path) -> list[Milestone]:
    """Every team of a leaderboard downloaded with ``kaggle competitions leaderboard -d``.

    Accepts the CSV or the ``.zip`` the CLI writes. Columns: ``TeamId``/``TeamName`` and
    ``Score`` (case-insensitive). A team listed several times keeps its best score. Teams are
    ranked by score, descending (ties by earlier submission); tied scores share the best rank
    in :func:`estimate_rank`.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path}: leaderboard CSV not found; download it with "
            f"`kaggle competitions leaderboard {COMPETITION} -d`"
        )
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
                if not names:
                    raise PipelineError(f"{path}: the zip holds no CSV file")
                frame = pd.read_csv(io.BytesIO(zf.read(names[0])))
        else:
            frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot be parsed as CSV ({exc})") from None
    columns = {c.lower(): c for c in frame.columns}
    team = columns.get("teamid") or columns.get("teamname")
    if "score" not in columns or team is None:
        raise PipelineError(
            f"{path}: expected columns TeamId (or TeamName) and Score, found "
            f"{', '.join(map(str, frame.columns))}"
        )
    scores = pd.to_numeric(frame[columns["score"]], errors="coerce")
    frame = frame.assign(_score=scores).dropna(subset=["_score"])
    if frame.empty:
        raise PipelineError(f"{path}: no numeric Score values")
    # Kaggle breaks ties by the earlier submission; without dates, file order is kept.
    keys, ascending = ["_score"], [False]
    if "submissiondate" in columns:
        keys, ascending = ["_score", columns["submissiondate"]], [False, True]
    best = frame.sort_values(keys, ascending=ascending, kind="stable")
    best = best.drop_duplicates(team, keep="first")
    name_col = columns.get("teamname", team)
    rows = []
    for position, (_, row) in enumerate(best.iterrows(), start=1):
        rows.append(Milestone(position, float(row["_score"]), str(row[name_col])))
    return rows
