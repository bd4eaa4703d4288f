"""The order a run's cells are shown and read in, from the strategy and server classes (never a
list kept here), and the selections every analysis and report makes: one record
per cell, a cell's level at a concurrency, what a verdict matrix holds fixed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from forkwise.matrix.records.axes import axes
from forkwise.matrix.records.types import CellRecord, LoadLevel


def ordered(names: Iterable[str], canonical: Sequence[str]) -> list[str]:
    names = set(names)
    known = [n for n in canonical if n in names]
    return known + sorted(names - set(canonical))


def rank(name: str, canonical: Sequence[str]) -> int:
    return canonical.index(name) if name in canonical else len(canonical)


@lru_cache(maxsize=1)
def strategy_order() -> tuple[str, ...]:
    """The registered strategies, in the order their classes declare (``Strategy.report_rank``)."""
    from forkwise.strategies import registry

    classes = [registry.get(name) for name in registry.names()]
    return tuple(c.name for c in sorted(classes, key=lambda c: (c.report_rank, c.name)))


@lru_cache(maxsize=1)
def server_order() -> tuple[str, ...]:
    """The registered server settings, in the order their classes declare (``ServerAdapter.report_rank``)."""
    from forkwise.servers import names

    return tuple(names())


def strategies_of(records: Iterable[CellRecord]) -> list[str]:
    return ordered((r.strategy for r in records), strategy_order())


def servers_of(records: Iterable[CellRecord]) -> list[str]:
    return ordered((r.server for r in records), server_order())


def server_rank(name: str) -> int:
    return rank(name, server_order())


def cell_order(record: CellRecord) -> tuple[int, int]:
    """Where a cell's row goes: by its strategy, then by its server."""
    return (rank(record.strategy, strategy_order()), server_rank(record.server))


def latest_by_cell(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    """One record per cell_id (the last one, should a cell appear twice)."""
    return {r.cell_id: r for r in records}


def level_at(record: CellRecord | None, concurrency: int) -> LoadLevel | None:
    if record is None:
        return None
    return next((lv for lv in record.load if lv.concurrency == concurrency), None)


def highest_level(record: CellRecord) -> LoadLevel | None:
    return max(record.load, key=lambda lv: lv.concurrency, default=None)


Combination = tuple  # one value per axis a verdict matrix holds fixed (every axis but strategy and server)
MATRIX_AXES = ("strategy", "server")  # a verdict matrix's rows and columns


def combination(record: CellRecord) -> Combination:
    """What a verdict matrix holds fixed: every other axis (workers, model, device, scenario, ...)."""
    return tuple(record.cell[a.name] for a in axes() if a.name not in MATRIX_AXES)


def combination_label(combo: Combination) -> str:
    values = dict(zip((a.name for a in axes() if a.name not in MATRIX_AXES), combo, strict=True))
    return ", ".join(text for a in axes() if a.name in values for text in [a.describe(values[a.name])] if text)


def combinations(records: Sequence[CellRecord]) -> list[Combination]:
    """Distinct combinations, the most common first (ties in first-seen order)."""
    counts = Counter(combination(r) for r in records)
    first_seen = {c: i for i, c in reversed(list(enumerate(combination(r) for r in records)))}
    return sorted(counts, key=lambda c: (-counts[c], first_seen[c]))


