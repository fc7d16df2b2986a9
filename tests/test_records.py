"""The metrics files: TrainRecord and CVSummary round-trip through JSON, and a file of any other
shape (unknown or missing key, wrong type, not JSON, missing) is one line naming the file."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.errors import PipelineError
from pipeline.records import (
    CVSummary,
    GroupScore,
    PredictSettings,
    TrainRecord,
    read_record,
    to_json,
    write_record,
)

RECORD = TrainRecord(
    model="unet", fold=2, best_epoch=5, val_dice=0.991, val_accuracy=0.998, val_precision=0.99,
    val_recall=0.992, val_images=320, train_loss=0.03, epochs=6, images_per_s=12.5,
    seconds=600.0, height=320, width=480, device="cpu", precision="bf16", full_res_val=False,
    peak_memory_mib=2048.0, params=7_000_000, train_batches=290, batches_per_epoch=50)

SUMMARY = CVSummary(
    mode="oof", label="unet", data_root="data/carvana", folds_file="folds/folds.csv",
    images=64, dice=0.99, dice_std=0.004, dice_min=0.97, dice_median=0.991, precision=0.99,
    recall=0.99,
    folds={"0": GroupScore(dice=0.989, std=0.005, images=32),
           "1": GroupScore(dice=0.991, std=0.003, images=32)},
    angles={"01": GroupScore(dice=0.99, std=0.0, images=4)},
    makes={"Audi": GroupScore(dice=0.99, std=0.002, images=16)},
    checkpoints={"0": "checkpoints/unet/fold0/best.pt", "1": "checkpoints/unet/fold1/best.pt"},
    skipped_folds=[2], images_per_s=3.5,
    predict=PredictSettings(tta=["hflip"], threshold=0.5, largest_component=True,
                            precision="fp32", device="cpu"))


def test_train_record_round_trip(tmp_path):
    path = write_record(tmp_path / "metrics" / "unet" / "fold2.json", RECORD)
    assert json.loads(path.read_text()) == to_json(RECORD)
    assert read_record(path, TrainRecord) == RECORD
    assert not list(path.parent.glob(".*.tmp"))  # written atomically


def test_train_record_without_validation_and_optional_fields(tmp_path):
    bare = dataclasses.replace(RECORD, fold=-1, val_dice=None, val_accuracy=None,
                               val_precision=None, val_recall=None, val_images=None,
                               peak_memory_mib=None)
    data = to_json(bare)
    for key in ("params", "train_batches", "batches_per_epoch"):  # older records lack them
        del data[key]
    path = tmp_path / "fold-1.json"
    path.write_text(json.dumps(data))
    back = read_record(path, TrainRecord)
    assert back.val_dice is None and back.params is None and back.fold == -1


def test_cv_summary_round_trip_keeps_nested_records(tmp_path):
    path = write_record(tmp_path / "cv.json", SUMMARY)
    back = read_record(path, CVSummary)
    assert back == SUMMARY
    assert isinstance(back.folds["0"], GroupScore) and back.folds["0"].images == 32
    assert isinstance(back.predict, PredictSettings) and back.predict.largest_component
    assert back.fold_dice() == {0: 0.989, 1: 0.991}
    assert to_json(back)["folds"]["1"] == {"dice": 0.991, "std": 0.003, "images": 32, "ci95": None}


def test_all_images_summary_lists_its_checkpoints(tmp_path):
    summary = dataclasses.replace(SUMMARY, mode="all-images", folds_file=None,
                                  folds={"-1": GroupScore(dice=0.99, std=0.004, images=64)},
                                  checkpoints=["a.pt", "b.pt"], skipped_folds=[])
    back = read_record(write_record(tmp_path / "cv.json", summary), CVSummary)
    assert back.checkpoints == ["a.pt", "b.pt"] and back.fold_dice() == {-1: 0.99}


def test_epochs_trained_is_a_fraction_under_a_time_budget():
    assert RECORD.epochs_trained == pytest.approx(5.8)  # 290 batches of 50 per epoch
    assert dataclasses.replace(RECORD, train_batches=None).epochs_trained == 6.0
    assert dataclasses.replace(RECORD, batches_per_epoch=0).epochs_trained == 6.0


def _broken(data: dict, **changes) -> dict:
    return {**data, **changes}


@pytest.mark.parametrize(
    "cls, data, words",
    [
        (TrainRecord, _broken(to_json(RECORD), lr=0.1), "unexpected key 'lr'"),
        (TrainRecord, {k: v for k, v in to_json(RECORD).items() if k != "seconds"},
         "missing key 'seconds'"),
        (TrainRecord, _broken(to_json(RECORD), epochs="six"), "epochs: expected int, got 'six'"),
        (TrainRecord, _broken(to_json(RECORD), full_res_val=1),
         "full_res_val: expected true or false"),
        (CVSummary, _broken(to_json(SUMMARY), cv_dice=0.99), "unexpected key 'cv_dice'"),
        (CVSummary, _broken(to_json(SUMMARY), folds=[0.98, 0.99]),
         "folds: expected a mapping"),
        (CVSummary, _broken(to_json(SUMMARY), folds={"0": {"dice": 0.9}}),
         "folds.0: missing key 'std'"),
        (CVSummary, _broken(to_json(SUMMARY), predict={**to_json(SUMMARY)["predict"], "tta": "h"}),
         "predict: tta: expected a list"),
        (CVSummary, [to_json(SUMMARY)], "expected a JSON object, got list"),
    ],
)
def test_other_shapes_are_one_line_naming_the_file(tmp_path, cls, data, words):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PipelineError) as err:
        read_record(path, cls)
    message = str(err.value)
    what = "training record (pipeline.train)" if cls is TrainRecord \
        else "CV summary (pipeline.evaluate)"
    assert message.startswith(f"{path} (a {what}): ") and words in message
    assert "\n" not in message


def test_not_json_and_missing_files_are_one_line(tmp_path):
    path = tmp_path / "cv.json"
    path.write_text('{"dice": 0.99,')
    with pytest.raises(PipelineError) as err:
        read_record(path, CVSummary)
    assert str(err.value).startswith(f"{path}: not a readable CV summary (pipeline.evaluate) (")
    assert "\n" not in str(err.value)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PipelineError, match="not a readable CV summary"):
        read_record(path, CVSummary)
    with pytest.raises(PipelineError) as err:
        read_record(tmp_path / "fold0.json", TrainRecord)
    assert str(err.value) == f"{tmp_path / 'fold0.json'}: training record (pipeline.train) " \
                             "not found"


def test_the_trainer_writes_a_record_that_reads_back(tiny_trained):
    record = read_record(tiny_trained.record, TrainRecord)
    assert record.model == "tiny" and record.fold == 0
    assert (record.height, record.width, record.precision) == (64, 96, "fp32")
    assert record.train_batches == 6 and record.batches_per_epoch == 3  # 2 epochs of 3 steps
    assert record.epochs_trained == pytest.approx(2.0)
    assert json.loads(tiny_trained.record.read_text()) == to_json(record)
