"""The leaderboard stage CLI (`python -m pipeline.leaderboard`): scores from the command line,
from CV summaries written by pipeline.evaluate (read strictly: any other shape is one line
naming the file) and from Kaggle; reports; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import kaggle
from pipeline.errors import PipelineError
from pipeline.leaderboard import __main__ as lb
from pipeline.records import CVSummary, GroupScore, PredictSettings, to_json, write_record


def cv_summary(label: str, dice: float) -> CVSummary:
    """An out-of-fold summary as pipeline.evaluate writes it."""
    group = GroupScore(dice=dice, std=0.0005, images=16)
    return CVSummary(
        mode="oof", label=label, data_root="data/carvana", folds_file="folds/folds.csv",
        images=32, dice=dice, dice_std=0.0005, dice_min=dice - 0.01, dice_median=dice,
        precision=0.99, recall=0.99, folds={"0": group, "1": group}, angles={"01": group},
        makes={"Audi": group}, checkpoints={"0": "a.pt", "1": "b.pt"}, images_per_s=3.0,
        predict=PredictSettings(tta=["hflip"], threshold=0.5, largest_component=False,
                                precision="fp32", device="cpu"),
    )


def test_read_cv_score_reads_a_cv_summary(tmp_path):
    path = write_record(tmp_path / "fpn" / "cv.json", cv_summary("fpn", 0.991))
    assert lb.read_cv_score(path) == ("fpn", pytest.approx(0.991))
    with pytest.raises(PipelineError, match="metrics file not found"):
        lb.read_cv_score(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "content, words",
    [
        ({"cv_dice": 0.991, "std": 0.001}, "unexpected key 'cv_dice'"),
        ({"dice": {"mean": 0.98, "std": 0.01}, "label": "fpn"}, "missing key 'mode'"),
        ({**to_json(cv_summary("fpn", 0.99)), "dice": "high"}, "dice: expected float"),
        ([0.99], "expected a JSON object, got list"),
        ("{not json", "not a readable CV summary"),
    ],
)
def test_read_cv_score_rejects_other_shapes_with_one_line(tmp_path, content, words):
    path = tmp_path / "cv.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PipelineError) as err:
        lb.read_cv_score(path)
    assert str(err.value).startswith(str(path)) and words in str(err.value)
    assert "\n" not in str(err.value)


def test_gather_scores_from_every_source(tmp_path, monkeypatch):
    path = write_record(tmp_path / "cv.json", cv_summary("unet", 0.996))
    asked = []

    def fake_fetch(submission, competition):
        asked.append((submission, competition))
        return 0.9965

    monkeypatch.setattr(kaggle, "fetch_score", fake_fetch)
    found = lb.gather_scores([0.99], [path], None, Path("out/s.csv.gz"), True)
    assert found == [("score 0.99", 0.99), ("unet", pytest.approx(0.996)),
                     ("kaggle s.csv.gz", 0.9965)]
    assert asked == [(Path("out/s.csv.gz"), kaggle.COMPETITION)]
    with pytest.raises(PipelineError, match="no metrics file matches"):
        lb.gather_scores([], [], str(tmp_path / "none" / "*.json"), None, False)


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_score_prints_rank_zone_and_writes_reports(tmp_path):
    md, js = tmp_path / "reports" / "leaderboard.md", tmp_path / "lb.json"
    result = runner.invoke(lb.app, ["--score", "0.9968", "--out", str(md), "--out", str(js)])
    assert result.exit_code == 0, result.output
    assert "40 / 735" in result.output and "zone: silver" in result.output
    assert "gold (rank 11) needs Dice >= 0.99710: +0.00030" in result.output
    assert "| score 0.9968 | 0.99680 | 40 / 735 |" in md.read_text()
    data = json.loads(js.read_text())
    assert data["results"][0]["rank"] == 40 and data["results"][0]["zone"] == "silver"


def test_cli_metrics_glob_compares_every_model(tmp_path):
    for label, dice in [("unet", 0.9960), ("fpn", 0.9972)]:
        write_record(tmp_path / "metrics" / label / "cv.json", cv_summary(label, dice))
    md = tmp_path / "lb.md"
    result = runner.invoke(
        lb.app, ["--metrics-glob", str(tmp_path / "metrics" / "*" / "cv.json"), "--out", str(md)]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in md.read_text().splitlines() if line.startswith(("| fpn", "| unet"))]
    assert [r.split("|")[1].strip() for r in rows] == ["fpn", "unet"]  # best first
    assert "3 / 735" in rows[0]


def test_cli_rejects_a_metrics_file_of_another_shape(tmp_path):
    path = tmp_path / "cv.json"
    path.write_text(json.dumps({"mean": 0.99, "per_fold": [0.99, 0.98]}))
    result = runner.invoke(lb.app, ["--metrics", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}")
    assert "unexpected key 'mean'" in lines[0]


def test_cli_leaderboard_csv(tmp_path):
    board = tmp_path / "lb.csv"
    board.write_text(
        "TeamId,TeamName,SubmissionDate,Score\n"
        "1,alpha,2017-09-01 00:00:00,0.9960\n"
        "1,alpha,2017-09-20 00:00:00,0.9972\n"
        "2,beta,2017-09-10 00:00:00,0.9970\n"
        "3,gamma,2017-09-11 00:00:00,0.9970\n"
        "4,delta,2017-09-12 00:00:00,0.9900\n"
    )
    result = runner.invoke(lb.app, ["--score", "0.9971", "--leaderboard-csv", str(board)])
    assert result.exit_code == 0, result.output
    assert "2 / 4" in result.output and "(4 teams)" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "nowhere/cv.json"], "nowhere/cv.json: metrics file not found"),
        ([], "nothing to compare"),
        (["--submission", "s.csv"], "add --fetch-kaggle"),
        (["--score", "0.99", "--leaderboard-csv", "no.csv"], "leaderboard CSV not found"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    result = runner.invoke(lb.app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
