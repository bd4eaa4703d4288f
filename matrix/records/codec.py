"""Records as JSON: a record's dataclasses to JSON-ready values and back, validated on the way in
(an unknown field, a missing one or a value of the wrong type is a RecordError that names it)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from forkwise.errors import RecordError


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def field_hints(cls: object) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode_dataclass(tp: Any, value: Any, where: str, decoded: dict[str, Any] | None) -> Any:
    if not isinstance(value, dict):
        raise RecordError(f"{where}: expected an object")
    hints = field_hints(tp)
    known = {f.name for f in dataclasses.fields(tp)}
    # Fields older records carry that this version no longer reads (a class's RETIRED_FIELDS).
    unknown = set(value) - known - getattr(tp, "RETIRED_FIELDS", frozenset())
    if unknown:
        raise RecordError(f"{where}: unknown fields {sorted(unknown)}")
    kwargs = dict(decoded or {})  # fields read already, by the caller
    for f in dataclasses.fields(tp):
        if f.name in kwargs:
            continue
        if f.name in value:
            kwargs[f.name] = decode(hints[f.name], value[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{where}: missing field {f.name!r}")
    return tp(**kwargs)


def decode(tp: Any, value: Any, where: str, decoded: dict[str, Any] | None = None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return decode(inner, value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where, decoded)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise RecordError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list")
        (inner, _ellipsis) = typing.get_args(tp)
        return tuple(decode(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise RecordError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise RecordError(f"{where}: cannot decode type {tp!r}")
