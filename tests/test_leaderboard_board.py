"""Leaderboard math: the packaged milestones, rank interpolation, Kaggle medal zones, the
place of a score, and a whole leaderboard CSV."""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.leaderboard import board as lb
from pipeline.leaderboard.board import Milestone

# The milestones of the issue, typed independently of the packaged CSV.
EXPECTED = [
    (1, 0.99733), (3, 0.9972), (10, 0.9971), (11, 0.9971), (15, 0.9970), (23, 0.9970),
    (30, 0.9969), (49, 0.9967), (496, 0.993), (511, 0.988423),
]


@pytest.fixture(scope="module")
def milestones() -> list[Milestone]:
    return lb.load_milestones()


def test_packaged_milestones_match_the_issue_and_name_their_source(milestones):
    assert [(m.rank, m.score) for m in milestones] == EXPECTED
    header = lb.milestones_path().read_text()
    assert "private leaderboard" in header.lower() and "735 teams" in header
    assert "kaggle.com/competitions/carvana-image-masking-challenge" in header


def test_each_milestone_maps_to_its_rank(milestones):
    for m in milestones:
        best_of_tie = min(o.rank for o in milestones if o.score == m.score)
        assert lb.estimate_rank(m.score, milestones)[0] == best_of_tie
    # Untied milestones map exactly to their own rank.
    assert lb.estimate_rank(0.9969, milestones)[0] == 30
    assert lb.estimate_rank(0.988423, milestones)[0] == 511


def test_above_first_is_first_and_far_below_is_last(milestones):
    assert lb.estimate_rank(0.9999, milestones) == (1, "gold")
    assert lb.estimate_rank(0.5, milestones) == (735, "none")


def test_interpolation_is_linear_and_rounded_up(milestones):
    # Halfway between 30th (0.9969) and 49th (0.9967): 39.5 -> 40.
    assert lb.estimate_rank(0.9968, milestones)[0] == 40
    # Just below a tie at 0.9971 (10th, 11th): the next place after the tie.
    assert lb.estimate_rank(0.99709999, milestones)[0] == 12
    # Extrapolated tail: linear from 511th at 0.988423 to the assumed 735th at FLOOR_SCORE.
    mid = (0.988423 + lb.FLOOR_SCORE) / 2
    assert lb.estimate_rank(mid, milestones)[0] == 623  # 511 + 112


def test_rank_never_improves_when_the_score_drops(milestones):
    scores = [1.0 - i * 1e-5 for i in range(6000)]  # 1.0 down to 0.94
    ranks = [lb.estimate_rank(s, milestones)[0] for s in scores]
    assert all(b >= a for a, b in itertools.pairwise(ranks))
    assert ranks[0] == 1 and ranks[-1] == 735


def test_complete_leaderboard_gives_exact_competition_ranks():
    board = [Milestone(i + 1, s) for i, s in enumerate([0.9, 0.8, 0.8, 0.7, 0.6])]
    # 1 + number of strictly better teams, the rule used on a complete board.
    for score, rank in [(0.95, 1), (0.9, 1), (0.85, 2), (0.8, 2), (0.75, 4), (0.7, 4), (0.61, 5)]:
        assert lb.estimate_rank(score, board, n_teams=5, floor=0.6)[0] == rank


def test_score_for_rank_inverts_estimate_rank(milestones):
    assert lb.score_for_rank(1, milestones) == 0.99733
    assert lb.score_for_rank(30, milestones) == 0.9969  # a milestone's own score
    assert lb.score_for_rank(735, milestones) == lb.FLOOR_SCORE  # the assumed last team
    for rank in (2, 40, 100, 300, 600):
        score = lb.score_for_rank(rank, milestones)
        assert lb.estimate_rank(score, milestones)[0] <= rank


def test_medal_cutoffs_follow_kaggle_rules():
    # 735 teams (250-999 band): gold top 10 + floor(0.2% * 735) = 11, silver top 50, bronze top 100.
    assert lb.medal_cutoffs(735) == {"gold": 11, "silver": 50, "bronze": 100}
    # Kaggle's own examples: 500 teams -> 11 golds, 5000 teams -> 20 golds.
    assert lb.medal_cutoffs(500)["gold"] == 11
    assert lb.medal_cutoffs(5000) == {"gold": 20, "silver": 250, "bronze": 500}
    assert lb.medal_cutoffs(50) == {"gold": 5, "silver": 10, "bronze": 20}
    assert lb.medal_cutoffs(200) == {"gold": 10, "silver": 40, "bronze": 80}
    assert lb.medal_cutoffs(3) == {"gold": 1, "silver": 1, "bronze": 1}
    with pytest.raises(PipelineError, match="must be positive, got 0"):
        lb.medal_cutoffs(0)


@pytest.mark.parametrize(
    "rank, zone",
    [(1, "gold"), (11, "gold"), (12, "silver"), (50, "silver"), (51, "bronze"), (100, "bronze"),
     (101, "none"), (735, "none")],
)
def test_zone_boundaries_for_735_teams(rank, zone):
    assert lb.zone_for_rank(rank, 735) == zone


def test_compare_reports_neighbours_and_dice_to_next_zone(milestones):
    r = lb.place(0.9968, milestones, label="unet")
    assert (r["rank"], r["zone"], r["label"]) == (40, "silver", "unet")
    assert r["above"]["rank"] == 30 and r["below"]["rank"] == 49
    assert r["next_zone"] == "gold" and r["next_zone_rank"] == 11
    assert r["next_zone_score"] == pytest.approx(0.9971)
    assert r["dice_needed"] == pytest.approx(0.0003)
    assert r["top_percent"] == pytest.approx(100 * 40 / 735)
    # The score said to be needed really reaches the next zone.
    assert lb.estimate_rank(r["next_zone_score"], milestones)[1] == "gold"
    # From no medal, bronze (rank 100) lies between 49th and 496th.
    r = lb.place(0.99, milestones)
    expected = 0.9967 - (100 - 49) / (496 - 49) * (0.9967 - 0.993)
    assert r["next_zone"] == "bronze" and r["next_zone_score"] == pytest.approx(expected)
    assert lb.estimate_rank(r["next_zone_score"], milestones)[0] == 100
    assert lb.estimate_rank(r["next_zone_score"] - 1e-6, milestones)[0] == 101


def test_place_from_gold_aims_at_first_and_flags_extrapolation(milestones):
    top = lb.place(0.9999, milestones)
    assert top["zone"] == "gold" and top["next_zone"] == "first place"
    assert top["dice_needed"] == 0.0 and top["above"] is None and not top["extrapolated"]
    low = lb.place(0.97, milestones)
    assert low["extrapolated"] and low["below"] is None
    assert low["above"] == {"rank": 511, "score": 0.988423, "note": milestones[-1].note}


def test_bad_milestone_file_is_one_line_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("rank,score,note\n1,0.9,a\n2,0.95,b\n")  # score rises with rank
    with pytest.raises(PipelineError, match="must not increase"):
        lb.load_milestones(path)
    with pytest.raises(PipelineError, match="milestones file not found"):
        lb.load_milestones(tmp_path / "none.csv")
    path.write_text("rank,score\none,0.9\n")
    with pytest.raises(PipelineError, match="expected CSV columns rank,score,note"):
        lb.load_milestones(path)


def _fake_board(path: Path) -> Path:
    # The kaggle CLI's leaderboard CSV: one row per leaderboard improvement, best kept per team.
    path.write_text(
        "TeamId,TeamName,SubmissionDate,Score\n"
        "1,alpha,2017-09-01 00:00:00,0.9960\n"
        "1,alpha,2017-09-20 00:00:00,0.9972\n"
        "2,beta,2017-09-10 00:00:00,0.9970\n"
        "3,gamma,2017-09-11 00:00:00,0.9970\n"
        "4,delta,2017-09-12 00:00:00,0.9900\n"
    )
    return path


def test_leaderboard_csv_is_ranked_by_best_score(tmp_path):
    board = lb.read_leaderboard_csv(_fake_board(tmp_path / "lb.csv"))
    assert [(m.rank, m.score, m.note) for m in board] == [
        (1, 0.9972, "alpha"), (2, 0.9970, "beta"), (3, 0.9970, "gamma"), (4, 0.9900, "delta"),
    ]
    assert lb.estimate_rank(0.9971, board, n_teams=4, floor=0.99)[0] == 2
    assert lb.estimate_rank(0.9970, board, n_teams=4, floor=0.99)[0] == 2
    assert lb.estimate_rank(0.9950, board, n_teams=4, floor=0.99)[0] == 4
    # The zip the CLI downloads works too.
    zipped = tmp_path / "board.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(tmp_path / "lb.csv", "carvana-publicleaderboard.csv")
    assert lb.read_leaderboard_csv(zipped) == board
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match="expected columns TeamId"):
        lb.read_leaderboard_csv(tmp_path / "x.csv")


def test_leaderboard_csv_errors_are_one_line(tmp_path):
    with pytest.raises(PipelineError, match="leaderboard CSV not found"):
        lb.read_leaderboard_csv(tmp_path / "none.csv")
    empty_zip = tmp_path / "e.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(PipelineError, match="the zip holds no CSV file"):
        lb.read_leaderboard_csv(empty_zip)
    (tmp_path / "n.csv").write_text("TeamName,Score\nalpha,n/a\n")
    with pytest.raises(PipelineError, match="no numeric Score values"):
        lb.read_leaderboard_csv(tmp_path / "n.csv")
