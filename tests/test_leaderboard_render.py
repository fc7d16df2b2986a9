"""The leaderboard comparison as text lines, a Markdown table (best first) and JSON."""

from __future__ import annotations

import json

import pytest

from pipeline.leaderboard.board import load_milestones, place
from pipeline.leaderboard.render import ranking_markdown, ranking_text, write_ranking

SOURCE = "Carvana private leaderboard milestones (735 teams)"


@pytest.fixture(scope="module")
def milestones():
    return load_milestones()


def test_text_names_rank_zone_neighbours_and_the_dice_to_the_next_zone(milestones):
    text = ranking_text(place(0.9968, milestones, label="unet"))
    lines = text.splitlines()
    assert lines[0] == "unet: Dice 0.99680"
    assert lines[1] == "  estimated rank: 40 / 735 (top 5.4%), zone: silver"
    assert lines[2].startswith("  between 30th (0.9969) above and 49th (0.9967) below")
    assert lines[3] == "  gold (rank 11) needs Dice >= 0.99710: +0.00030"


def test_text_at_the_top_and_below_the_last_milestone(milestones):
    top = ranking_text(place(0.9999, milestones, label="best")).splitlines()
    assert "between - above and 1st (0.99733) below" in top[2]
    assert top[3] == "  already at the first place score (0.99733)"
    low = ranking_text(place(0.97, milestones, label="weak")).splitlines()
    assert "(below the last milestone: extrapolated)" in low[1]
    assert "511th (0.988423) above and - below" in low[2]


def test_markdown_is_sorted_best_first_and_marks_extrapolation(milestones):
    results = [place(0.97, milestones, label="weak"), place(0.9968, milestones, label="unet")]
    md = ranking_markdown(results, SOURCE)
    assert md.startswith("# Leaderboard comparison\n")
    assert f"Compared with: {SOURCE}." in md
    rows = [line for line in md.splitlines() if line.startswith(("| unet", "| weak"))]
    assert rows[0] == "| unet | 0.99680 | 40 / 735 | 5.4 | silver | gold | 0.00030 |"
    assert rows[1].startswith("| weak | 0.97000 |") and "/ 735* |" in rows[1]
    assert md.endswith("extrapolated to the assumed last team.\n")
    plain = ranking_markdown(results[1:], SOURCE)
    assert "*" not in plain.split("|---|")[-1]


def test_write_ranking_picks_the_format_by_suffix(milestones, tmp_path):
    results = [place(0.9968, milestones, label="unet")]
    js = write_ranking(results, SOURCE, tmp_path / "out" / "lb.json")
    data = json.loads(js.read_text())
    assert data["source"] == SOURCE and data["results"] == results
    md = write_ranking(results, SOURCE, tmp_path / "lb.md")
    assert md.read_text() == ranking_markdown(results, SOURCE)
    other = write_ranking(results, SOURCE, tmp_path / "lb.txt")  # anything else: Markdown
    assert other.read_text() == md.read_text()
    assert not list(tmp_path.rglob(".*.tmp"))
