"""The leaderboard comparison as text lines, a Markdown table or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.atomic import write_json, write_text


def _where(m: dict | None) -> str:
    if m is None:
        return "-"
    return f"{_ordinal(m['rank'])} ({m['score']:.6g})"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ranking_text(result: dict) -> str:
    """Human-readable lines for one :func:`~pipeline.leaderboard.board.place` result."""
    r = result
    est = "estimated rank"
    if r["extrapolated"]:
        est += " (below the last milestone: extrapolated)"
    lines = [
        f"{r['label']}: Dice {r['score']:.5f}",
        f"  {est}: {r['rank']} / {r['n_teams']} (top {r['top_percent']:.1f}%), zone: {r['zone']}",
        f"  between {_where(r['above'])} above and {_where(r['below'])} below",
    ]
    if r["dice_needed"] > 0:
        lines.append(
            f"  {r['next_zone']} (rank {r['next_zone_rank']}) needs Dice >= "
            f"{r['next_zone_score']:.5f}: +{r['dice_needed']:.5f}"
        )
    else:
        lines.append(f"  already at the {r['next_zone']} score ({r['next_zone_score']:.5f})")
    return "\n".join(lines)


def ranking_markdown(results: Sequence[dict], source: str) -> str:
    """A Markdown table of results, best score first."""
    lines = [
        "# Leaderboard comparison",
        "",
        (f"Compared with: {source}. Ranks between milestones are linear estimates; see "
        "`pipeline/leaderboard/board.py` for the conventions."),
        "",
        "| label | Dice | est. rank | top % | zone | next zone | Dice needed |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for r in sorted(results, key=lambda r: -r["score"]):
        rank = f"{r['rank']} / {r['n_teams']}" + ("*" if r["extrapolated"] else "")
        lines.append(
            f"| {r['label']} | {r['score']:.5f} | {rank} | {r['top_percent']:.1f} | {r['zone']} "
            f"| {r['next_zone']} | {r['dice_needed']:.5f} |"
        )
    if any(r["extrapolated"] for r in results):
        lines += ["", "\\* below the last milestone: extrapolated to the assumed last team."]
    return "\n".join(lines) + "\n"


def write_ranking(results: Sequence[dict], source: str, out: str | Path) -> Path:
    """``.json`` -> the results as JSON; anything else -> Markdown. Atomic."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        return write_json(out, {"source": source, "results": list(results)})
    return write_text(out, ranking_markdown(results, source))
