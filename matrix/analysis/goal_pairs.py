"""Which pair of cells each ratio goal turns on, chosen from the passes before the pairs are
measured interleaved (``run.goal_rounds``): one fact, one place for "the pair of goal N".

- goal 1: the best OK model cell of the default model at concurrency 32 (the finalists' best
  where the run ranked them, else the passes' fastest) against its control;
- goal 2: per batching model, the batched cell with the highest ratio over its lazy peer;
- goal 3: the batched cell with the highest p50 ratio over its unbatched peer at concurrency 1.

The passes only choose; the goals are judged on the rounds (``analysis.goals``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from forkwise.matrix.analysis.controls import Controls, is_control, peer
from forkwise.matrix.analysis.goals import BATCHED, BATCHING_MODELS, LAZY, TOP_CONCURRENCY, level_of, window_tax_pairs
from forkwise.matrix.analysis.paired import PairPlan
from forkwise.matrix.records.types import CellRecord


def _ok(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.verdict.ok]


def _rps(record: CellRecord, concurrency: int) -> float:
    level = level_of(record, concurrency)
    return level.rps if level is not None else 0.0


def ceiling_pair(records: Sequence[CellRecord], finalists_best: Collection[str] = ()) -> PairPlan | None:
    """Goal 1: the best OK default-model cell at c32 (a finalists' best first) and its control."""
    controls = Controls.of_run(records)
    cells = [r for r in _ok(records) if r.model == "default" and not is_control(r.strategy)
             and _rps(r, TOP_CONCURRENCY) > 0]
    cells = [r for r in cells if (c := controls.control_for(r)) is not None and c.verdict.ok]
    if not cells:
        return None
    best = max(cells, key=lambda r: (r.cell_id in finalists_best, _rps(r, TOP_CONCURRENCY), r.cell_id))
    control = controls.control_for(best)
    assert control is not None  # kept above only with one
    return PairPlan(1, best.cell_id, control.cell_id, TOP_CONCURRENCY, "rps", "default model")


def batching_pairs(records: Sequence[CellRecord]) -> list[PairPlan]:
    """Goal 2: per batching model, the batched cell ahead of its lazy peer by the most, with that peer."""
    found = []
    for model in BATCHING_MODELS:
        pairs = []
        for b in _ok(records):
            lazy = peer(b, LAZY, records) if b.strategy == BATCHED and b.model == model else None
            rps, lazy_rps = _rps(b, TOP_CONCURRENCY), _rps(lazy, TOP_CONCURRENCY) if lazy else 0.0
            if lazy is not None and lazy.verdict.ok and rps > 0 and lazy_rps > 0:
                pairs.append((rps / lazy_rps, b.cell_id, lazy.cell_id))
        if pairs:
            _, mine, theirs = max(pairs)
            found.append(PairPlan(2, mine, theirs, TOP_CONCURRENCY, "rps", f"{model} model"))
    return found


def window_tax_pair(records: Sequence[CellRecord]) -> PairPlan | None:
    """Goal 3: at concurrency 1, the batched default-model CPU cell slowest against its unbatched peer."""
    pairs = window_tax_pairs(records)
    if not pairs:
        return None
    _, mine, theirs, _, _ = max(pairs, key=lambda p: (p[0], p[1].cell_id))
    return PairPlan(3, mine.cell_id, theirs.cell_id, 1, "p50_ms", "default model")


def goal_pairs(records: Sequence[CellRecord], finalists_best: Collection[str] = ()) -> list[PairPlan]:
    """Every pair the run's ratio goals turn on (records combined, one per cell)."""
    plans = [ceiling_pair(records, finalists_best), *batching_pairs(records), window_tax_pair(records)]
    return [p for p in plans if p is not None]
