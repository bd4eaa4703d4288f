"""Which cells each ratio goal compares (its candidates: ``analysis.goals`` judges them on the passes
where a run measured no rounds), and the pair it turns on, chosen from the passes before the pairs
are measured interleaved (``run.goal_rounds``): one fact, one place for "the pair of goal N".

- goal 1: the best OK model cell of the default model at concurrency 32 (the finalists' best
  where the run ranked them, else the passes' fastest) against its control;
- goal 2: per batching model, the batched cell with the highest ratio over its lazy peer;
- goal 3: the batched cell with the highest p50 ratio over its unbatched peer at concurrency 1.

The passes only choose; the goals are judged on the rounds (``analysis.goals``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from forkwise.matrix.analysis.controls import Controls, is_control, peer
from forkwise.matrix.analysis.paired import PairPlan
from forkwise.matrix.records.types import CellRecord, LoadLevel
from forkwise.strategies.child_process import ChildProcess, ChildProcessBatched
from forkwise.strategies.lazy import Lazy

BATCHED = ChildProcessBatched.name
LAZY = Lazy.name
CHILD_PROCESS = ChildProcess.name
TOP_CONCURRENCY = 32
BATCHING_MODELS = ("large", "cnn")  # goal 2's models: a call whose batch-1 cost dominates the request


def ok_cells(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.verdict.ok]


def level_of(record: CellRecord, concurrency: int) -> LoadLevel | None:
    """A record's load level at `concurrency`, or None."""
    return next((lv for lv in record.load if lv.concurrency == concurrency), None)


def ceiling_candidates(records: Sequence[CellRecord]) -> list[tuple[CellRecord, CellRecord]]:
    """Goal 1's cells: every OK model cell of the default model, with its OK control."""
    controls = Controls.of_run(records)
    found = []
    for r in ok_cells(records):
        control = controls.control_for(r)
        if not is_control(r.strategy) and r.model == "default" and control is not None and control.verdict.ok:
            found.append((r, control))
    return found


def batching_candidates(records: Sequence[CellRecord]) -> list[tuple[CellRecord, CellRecord]]:
    """Goal 2's cells: every OK batched cell of a batching model, with its OK lazy peer."""
    found = []
    for b in ok_cells(records):
        lazy = peer(b, LAZY, records) if b.strategy == BATCHED and b.model in BATCHING_MODELS else None
        if lazy is not None and lazy.verdict.ok:
            found.append((b, lazy))
    return found


def window_tax_pairs(records: Sequence[CellRecord]) -> list[tuple[float, CellRecord, CellRecord, float, float]]:
    """Goal 3's candidates from the passes: (p50 ratio at c1, batched, unbatched, their p50s), per request path."""
    pairs = []
    for b in ok_cells(records):
        if b.strategy != BATCHED or b.model != "default" or b.device != "cpu":
            continue
        plain = peer(b, CHILD_PROCESS, ok_cells(records))
        lb, lp = level_of(b, 1), plain and level_of(plain, 1)
        if plain and lb and lp and lp.latency.p50_ms > 0:
            pairs.append((lb.latency.p50_ms / lp.latency.p50_ms, b, plain, lb.latency.p50_ms, lp.latency.p50_ms))
    return pairs


def _rps(record: CellRecord, concurrency: int = TOP_CONCURRENCY) -> float:
    level = level_of(record, concurrency)
    return level.rps if level is not None else 0.0


def ceiling_pair(records: Sequence[CellRecord], finalists_best: Collection[str] = ()) -> PairPlan | None:
    """Goal 1: the best OK default-model cell at c32 (a finalists' best first) and its control."""
    cells = [(r, control) for r, control in ceiling_candidates(records) if _rps(r) > 0]
    if not cells:
        return None
    best, control = max(cells, key=lambda pair: (pair[0].cell_id in finalists_best, _rps(pair[0]), pair[0].cell_id))
    return PairPlan(1, best.cell_id, control.cell_id, TOP_CONCURRENCY, "rps", "default model")


def batching_pairs(records: Sequence[CellRecord]) -> list[PairPlan]:
    """Goal 2: per batching model, the batched cell ahead of its lazy peer by the most, with that peer."""
    found = []
    for model in BATCHING_MODELS:
        pairs = [(_rps(b) / _rps(lazy), b.cell_id, lazy.cell_id) for b, lazy in batching_candidates(records)
                 if b.model == model and _rps(b) > 0 and _rps(lazy) > 0]
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
