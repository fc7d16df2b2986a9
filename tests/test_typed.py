"""Strict conversion of parsed YAML/JSON into dataclass fields: scalars, unions, lists,
``dict[str, X]``, nested dataclasses; unknown, missing and wrongly typed values are one line."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.errors import PipelineError
from pipeline.typed import build, coerce, field_types


@dataclass
class Inner:
    dice: float
    images: int


@dataclass
class Outer:
    name: str
    inner: Inner
    groups: dict[str, Inner]
    tags: list[str] = field(default_factory=list)
    either: dict[str, str] | list[str] = field(default_factory=list)
    maybe: int | None = None


def test_field_types_resolves_the_string_annotations():
    types = field_types(Outer)
    assert list(types) == ["name", "inner", "groups", "tags", "either", "maybe"]
    assert types["inner"] is Inner and types["tags"] == list[str]
    assert types["maybe"] == int | None


@pytest.mark.parametrize(
    "value, tp, expected",
    [
        (3, int, 3),
        (3, float, 3.0),
        ("1e-3", float, 0.001),  # YAML 1.1 reads 1e-3 as a string
        (True, bool, True),
        ("x", str, "x"),
        (None, int | None, None),
        (2, int | None, 2),
        ([1, 2], list[float], [1.0, 2.0]),
        ({"a": 1}, dict[str, float], {"a": 1.0}),
    ],
)
def test_coerce_accepts_and_converts_losslessly(value, tp, expected):
    out = coerce(value, tp, "here")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value, tp, message",
    [
        ("three", int, "here: expected int, got 'three'"),
        (1.5, int, "here: expected int, got 1.5"),
        (True, int, "here: expected int, got True"),  # a bool is not a number here
        ("yes", bool, "here: expected true or false, got 'yes'"),
        (1, bool, "here: expected true or false, got 1"),
        ("fast", float, "here: expected float, got 'fast'"),
        (3, str, "here: expected str, got 3"),
        (None, int, "here: expected int, got None"),
        (None, int | str, "here: expected a value, got null"),
        ("a", list[str], "here: expected a list, got 'a'"),
        ([1, "b"], list[int], "here: expected int, got 'b'"),
        ([1], dict[str, int], "here: expected a mapping, got [1]"),
        ({"k": "v"}, dict[str, int], "here.k: expected int, got 'v'"),
    ],
)
def test_coerce_rejects_wrong_types_with_one_line(value, tp, message):
    with pytest.raises(PipelineError) as err:
        coerce(value, tp, "here")
    assert str(err.value) == message


def test_unions_are_tried_in_order_and_report_the_first_failure():
    assert coerce({"0": "a.pt"}, dict[str, str] | list[str], "w") == {"0": "a.pt"}
    assert coerce(["a.pt"], dict[str, str] | list[str], "w") == ["a.pt"]
    assert coerce(3, int | float, "w") == 3 and type(coerce(3, float | int, "w")) is float
    with pytest.raises(PipelineError, match="^w: expected a mapping, got 'a.pt'$"):
        coerce("a.pt", dict[str, str] | list[str], "w")


GOOD = {"name": "unet", "inner": {"dice": 1, "images": 4},
        "groups": {"0": {"dice": 0.5, "images": 2}}, "tags": ["a"], "either": {"0": "x"},
        "maybe": 7}


def test_build_nested_dataclasses():
    out = build(Outer, GOOD, "f.json")
    assert out == Outer(name="unet", inner=Inner(1.0, 4), groups={"0": Inner(0.5, 2)},
                        tags=["a"], either={"0": "x"}, maybe=7)
    assert isinstance(out.inner.dice, float)
    short = build(Outer, {k: GOOD[k] for k in ("name", "inner", "groups")}, "f.json")
    assert short.tags == [] and short.either == [] and short.maybe is None  # defaults


@pytest.mark.parametrize(
    "change, message",
    [
        ({"extra": 1}, ("f.json: unexpected key 'extra' (expected only: name, inner, groups, "
                        "tags, either, maybe)")),
        ({"name": None}, "f.json: name: expected str, got None"),
        ({"inner": {"dice": 1.0}}, "f.json: inner: missing key 'images'"),
        ({"inner": {"dice": 1.0, "images": 2, "std": 0}},
         "f.json: inner: unexpected key 'std' (expected only: dice, images)"),
        ({"inner": [1, 2]}, "f.json: inner: expected a JSON object, got list"),
        ({"groups": {"0": {"dice": "high", "images": 2}}},
         "f.json: groups.0: dice: expected float, got 'high'"),
        ({"tags": "a"}, "f.json: tags: expected a list, got 'a'"),
        ({"maybe": 1.5}, "f.json: maybe: expected int, got 1.5"),
    ],
)
def test_build_rejects_other_shapes_with_one_line(change, message):
    with pytest.raises(PipelineError) as err:
        build(Outer, {**GOOD, **change}, "f.json")
    assert str(err.value) == message and "\n" not in message


def test_build_needs_every_required_key_and_an_object():
    values = {k: v for k, v in GOOD.items() if k != "inner"}
    with pytest.raises(PipelineError, match="^f.json: missing key 'inner'$"):
        build(Outer, values, "f.json")
    with pytest.raises(PipelineError, match="^f.json: expected a JSON object, got list$"):
        build(Outer, [GOOD], "f.json")
