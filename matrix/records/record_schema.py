"""The versioned JSON schema of a cell record (draft 2020-12), derived from the record's dataclasses
(forkwise.matrix.records.types): `forkwise schema` prints it, matrix/records/schema/ keeps the committed copy."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from forkwise.matrix.records.axes import axes
from forkwise.matrix.records.codec import field_hints
from forkwise.matrix.records.types import SCHEMA_VERSION, CellRecord


def _schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [o for o in typing.get_args(tp) if o is not type(None)]
        return {"anyOf": [_schema(inner), {"type": "null"}]}
    if dataclasses.is_dataclass(tp):
        hints = field_hints(tp)
        fields = [f for f in dataclasses.fields(tp) if f.name != "cell"]  # the record's axes: see json_schema
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {**{f.name: _schema(hints[f.name]) for f in fields},
                           **{name: {} for name in sorted(getattr(tp, "RETIRED_FIELDS", ()))}},
            "required": required,
        }
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin is tuple:
        return {"type": "array", "items": _schema(typing.get_args(tp)[0])}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if tp is Any:
        return {}
    return {float: {"type": "number"}, int: {"type": "integer"}, str: {"type": "string"}, bool: {"type": "boolean"}}[tp]


def json_schema() -> dict[str, Any]:
    """The versioned JSON schema of a CellRecord (draft 2020-12)."""
    schema = _schema(CellRecord)
    # The cell's axes stand at the top level, one field each (matrix.records.axes); a record made
    # before an axis existed has none, so only the axes without a default are required.
    schema["properties"] = {**{a.name: a.kind.schema for a in axes()}, **schema["properties"]}
    schema["required"] = [*(a.name for a in axes() if a.required), *schema["required"]]
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://forkwise.invalid/schema/cell-record-v{SCHEMA_VERSION}.json",
        "title": f"forkwise cell record, schema version {SCHEMA_VERSION}",
        **schema,
    }
