"""One family of value checks for every setting forkwise reads: a deployment's environment
(``config.AppSettings``), a cell's axes (``matrix.records.axes``), a cell's plan (``matrix.run.plan``)
and the command line (``cli``).

A ``Kind`` says how a value is written: read from text (the command line, an environment
variable), loaded from JSON or TOML, dumped to JSON, shown as text, described in a JSON schema.
A check is a function that raises ValueError with the reason. Each consumer turns that reason
into its own typed error once: ``validator`` for settings read under a name (ConfigError),
``argparse_type`` for flags (argparse's usage error).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise.errors import ConfigError

Check = Callable[[Any], None]


@dataclass(frozen=True)
class Kind:
    """How a setting's value is written: `parse` reads text, `load` a JSON (or TOML) value (each raising
    ValueError with the reason), `dump` gives the JSON value, `text` the text, `schema` its JSON schema."""

    parse: Callable[[str], Any]
    load: Callable[[Any], Any]
    dump: Callable[[Any], Any] = lambda v: v
    text: Callable[[Any], str] = str
    schema: dict[str, Any] = field(default_factory=dict)

    def coerce(self, value: Any) -> Any:
        """A value given either way: text is parsed, anything else loaded."""
        return self.parse(value) if isinstance(value, str) else self.load(value)


def _load_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _load_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _load_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _load_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None

    return parse


def _parse_list(kind: type, what: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def _load_list(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def load(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(item(x) for x in value)

    return load


def _load_label_or_count(value: Any) -> str:
    """A label or a whole number, kept as text ("per-worker", "4")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _load_str(value)


INT = Kind(parse=_parse_number(int), load=_load_int, schema={"type": "integer"})
FLOAT = Kind(parse=_parse_number(float), load=_load_float, text=repr, schema={"type": "number"})
TEXT = Kind(parse=str, load=_load_str, schema={"type": "string"})
BOOL = Kind(parse=_parse_bool, load=_load_bool, schema={"type": "boolean"})
LABEL_OR_COUNT = Kind(parse=str, load=_load_label_or_count, schema={"type": "string"})
LEVELS = Kind(parse=_parse_list(int, "whole numbers"), load=_load_list(_load_int), dump=list,
              text=lambda v: ",".join(map(str, v)), schema={"type": "array", "items": {"type": "integer"}})
RATES = Kind(parse=_parse_list(float, "requests a second"), load=_load_list(_load_float), dump=list,
             text=lambda v: ",".join(map(repr, v)), schema={"type": "array", "items": {"type": "number"}})
def _load_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    text = _load_str(value)
    if not text:
        raise ValueError("is required")
    return Path(text)


def _parse_path(text: str) -> Path:
    if not text:
        raise ValueError("is required")
    return Path(text)


PATH = Kind(parse=_parse_path, load=_load_path, dump=str, schema={"type": "string"})


def optional(kind: Kind) -> Kind:
    """The kind, or None (JSON null; on the command line: the flag left out)."""
    return Kind(parse=kind.parse, load=lambda v: None if v is None else kind.load(v),
                dump=lambda v: None if v is None else kind.dump(v), text=kind.text,
                schema={"anyOf": [kind.schema, {"type": "null"}]})


# --- checks: each raises ValueError with the reason ---------------------------------------------


def above(low: float, inclusive: bool = False) -> Check:
    """Every number of the value (one, or a tuple) above `low` (or at least, `inclusive`); None passes."""

    def check(value: Any) -> None:
        if value is None:
            return
        values = value if isinstance(value, tuple) else (value,)
        if any(v < low or (v == low and not inclusive) for v in values):
            raise ValueError(f"must be {'at least' if inclusive else 'above'} {low:g}, got {value!r}")

    return check


def within(low: float, high: float) -> Check:
    """A number from `low` to `high`, both included."""

    def check(value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value!r}")

    return check


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]]) -> Check:
    """The value is one of `choices` (or of what the callable returns when asked: a registry)."""

    def check(value: Any) -> None:
        valid = choices() if callable(choices) else choices
        if value not in valid:
            raise ValueError(f"expected one of {', '.join(valid)}, got {value!r}")

    return check


def label_or_count(labels: Sequence[str]) -> Check:
    """One of `labels`, or a whole number >= 1 written as text."""

    def check(value: Any) -> None:
        if not (value in labels or (str(value).isdigit() and int(value) >= 1)):
            raise ValueError(f"expected {', '.join(labels)} or a whole number >= 1, got {value!r}")

    return check


def required(value: Any) -> None:
    """Given, not empty."""
    if value in (None, ""):
        raise ValueError("is required")


# --- where a value is read: one typed error each -------------------------------------------------


def validator(kind: Kind, check: Check | None = None, text: bool = True) -> Callable[[str, Any], Any]:
    """(name, value) -> the value as `kind`, checked; a ConfigError that names the setting otherwise.
    `text`: text is parsed (an environment variable); False: a value as JSON or TOML holds it, so "60"
    for a number is refused."""

    def read(name: str, value: Any) -> Any:
        try:
            value = kind.coerce(value) if text else kind.load(value)
            if check is not None:
                check(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return value

    return read


def argparse_type(kind: Kind, check: Check | None = None) -> Callable[[str], Any]:
    """A flag's `type=`: the text as `kind`, checked; argparse's usage error (exit 2) otherwise."""

    def parse(text: str) -> Any:
        try:
            value = kind.parse(text)
            if check is not None:
                check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse
