"""Strict conversion of plain values (parsed YAML or JSON) into annotated dataclass fields.

Used by the config (YAML files and overrides) and the records (metrics JSON): a value of the
wrong type is one clear error naming where it came from, never a silent guess. Supported
annotations: bool, int, float (an int or a numeric string such as YAML's ``1e-3`` is accepted),
str, ``X | None``, unions tried in order, ``list[X]``, ``dict[str, X]`` and dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from pipeline.errors import PipelineError


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and where lossless, converted to) the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise PipelineError(f"{where}: expected a value, got null")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, where)
            except PipelineError as exc:
                errors.append(str(exc))
        raise PipelineError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise PipelineError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise PipelineError(f"{where}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise PipelineError(f"{where}: expected int, got {value!r}")
    if tp in (int, float, str) and not isinstance(value, tp):
        raise PipelineError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def build(cls: type, values: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from exactly its fields: an unknown key, a missing
    required key or a value of the wrong type is a :class:`PipelineError` naming ``where``."""
    if not isinstance(values, dict):
        raise PipelineError(f"{where}: expected a JSON object, got {type(values).__name__}")
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise PipelineError(f"{where}: unexpected key '{unknown[0]}' (expected only: "
                            f"{', '.join(types_)})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise PipelineError(f"{where}: missing key '{missing[0]}'")
    return cls(**{k: coerce(v, types_[k], f"{where}: {k}") for k, v in values.items()})
