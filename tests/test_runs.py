"""The run layout: every path of Roots, ModelPaths and RunPaths, the fold of a checkpoint, the
folds found on disk, and the ensemble a command line names."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.runs import ModelPaths, Roots, RunPaths, ensemble_checkpoints, fold_of


def test_default_roots_and_every_run_path():
    run = Roots().run("unet", 3)
    assert run == RunPaths("unet", 3)
    assert run.checkpoint_dir == Path("checkpoints/unet/fold3")
    assert run.best == Path("checkpoints/unet/fold3/best.pt")
    assert run.last == Path("checkpoints/unet/fold3/last.pt")
    assert run.record == Path("metrics/unet/fold3.json")
    assert run.live_dir == Path("dvclive/unet/fold3")
    assert run.report_dir == Path("reports/unet")


def test_an_earlier_phase_lives_in_a_subfolder_of_the_run(tmp_path):
    run = Roots().run("unet", 3)
    phase = run.phase_paths(0)
    assert phase.best == Path("checkpoints/unet/fold3/phase0/best.pt")
    assert phase.last == Path("checkpoints/unet/fold3/phase0/last.pt")
    assert phase.record == Path("checkpoints/unet/fold3/phase0/record.json")  # not in metrics/
    assert phase.live_dir == Path("dvclive/unet/fold3/phase0")
    assert run.phase_paths(1).checkpoint_dir == Path("checkpoints/unet/fold3/phase1")
    assert phase.phase == 0 and run.phase is None  # the run itself is unchanged
    # the ensemble never takes an earlier phase for a fold's model
    roots = Roots(checkpoints=tmp_path)
    roots.run("unet", 3).phase_paths(0).checkpoint_dir.mkdir(parents=True)
    roots.run("unet", 3).phase_paths(0).best.write_bytes(b"")
    assert roots.model("unet").fold_checkpoints() == {}
    roots.run("unet", 3).best.write_bytes(b"")
    assert roots.model("unet").fold_checkpoints() == {3: roots.run("unet", 3).best}


def test_model_paths_under_other_roots(tmp_path):
    roots = Roots(checkpoints=tmp_path / "ck", metrics=tmp_path / "me", live=tmp_path / "lv",
                  reports=tmp_path / "rp")
    model = roots.model("fpn")
    assert model == ModelPaths("fpn", roots)
    assert model.cv_summary == tmp_path / "me" / "fpn" / "cv.json"
    assert model.report_dir == tmp_path / "rp" / "fpn"
    run = roots.run("fpn", -1)  # trained on every image
    assert run.best == tmp_path / "ck" / "fpn" / "fold-1" / "best.pt"
    assert run.record == tmp_path / "me" / "fpn" / "fold-1.json"
    assert run.live_dir == tmp_path / "lv" / "fpn" / "fold-1"


@pytest.mark.parametrize(
    "path, fold",
    [("checkpoints/unet/fold0/best.pt", 0), ("x/fold12/last.pt", 12), ("x/fold-1/best.pt", -1)],
)
def test_fold_of_reads_the_folder(path, fold):
    assert fold_of(path) == fold
    assert fold_of(Path(path)) == fold


@pytest.mark.parametrize("path", ["x/best.pt", "x/foldA/best.pt", "x/fold0x/best.pt",
                                  "fold0.pt", "x/myfold1/best.pt"])
def test_fold_of_a_bad_folder_is_one_line(path):
    with pytest.raises(PipelineError) as err:
        fold_of(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot tell which fold it validates")
    assert "--all-images" in message and "\n" not in message


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_fold_checkpoints_and_training_records_found_on_disk(tmp_path):
    roots = Roots(checkpoints=tmp_path / "ck", metrics=tmp_path / "me")
    model = roots.model("unet")
    assert model.fold_checkpoints() == {} and model.training_records() == {}
    for fold in (10, 2, -1, 0):
        _touch(roots.run("unet", fold).best)
        _touch(roots.run("unet", fold).record)
    _touch(roots.run("unet", 5).last)  # a run without a best.pt
    _touch(tmp_path / "ck" / "unet" / "foldX" / "best.pt")  # not a fold folder
    _touch(tmp_path / "ck" / "other" / "fold1" / "best.pt")  # another label
    _touch(tmp_path / "me" / "unet" / "cv.json")
    _touch(tmp_path / "me" / "unet" / "fold3.json.bak")
    found = model.fold_checkpoints()
    assert list(found) == [-1, 0, 2, 10]  # sorted by fold
    assert found[2] == roots.run("unet", 2).best
    assert list(model.fold_checkpoints("last")) == [5]
    records = model.training_records()
    assert list(records) == [-1, 0, 2, 10] and records[10] == roots.run("unet", 10).record


def test_ensemble_checkpoints_given_or_every_fold(tmp_path):
    roots = Roots(checkpoints=tmp_path / "ck")
    model = roots.model("unet")
    a = _touch(roots.run("unet", 1).best)
    b = _touch(roots.run("unet", 0).best)
    everything = _touch(roots.run("unet", -1).best)
    # the fold ensemble (the models the CV score measures), in fold order: never fold -1's
    # model, trained on every image and scored by nothing
    assert ensemble_checkpoints(None, model) == [b, a]
    assert ensemble_checkpoints([], model) == [b, a]
    other = _touch(tmp_path / "elsewhere.pt")
    assert ensemble_checkpoints([str(other)], model) == [other]
    assert ensemble_checkpoints([str(everything)], model) == [everything]  # named: yes


def test_ensemble_checkpoints_errors_are_one_line(tmp_path):
    model = Roots(checkpoints=tmp_path / "ck").model("unet")
    with pytest.raises(PipelineError) as err:
        ensemble_checkpoints([tmp_path / "missing.pt"], model)
    assert str(err.value) == f"{tmp_path / 'missing.pt'}: checkpoint not found; check --checkpoint"
    with pytest.raises(PipelineError) as err:
        ensemble_checkpoints(None, model)
    message = str(err.value)
    assert message.startswith(f"no checkpoints found at {tmp_path / 'ck' / 'unet'}/fold<K>/best.pt")
    assert "--model" in message and "--checkpoint PATH" in message and "\n" not in message
