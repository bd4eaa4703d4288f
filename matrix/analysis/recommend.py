"""The recommendation: the most throughput within a p99 budget and a memory budget, answered
with the set of cells that cannot be told apart from the best (the analysis; ``recommend_report``
publishes it).

Teams ask what Triton's Model Analyzer answers: which deployment serves the most requests a
second while its p99 latency stays within one budget and its memory within another. Each OK
cell other than a control is taken at its operating point, its load level with the most
throughput whose p99 is within the budget; a cell whose total PSS is over the memory budget, or
that has no level within the p99 budget, is out.

One name would not survive a second run: on a shared 2-core host a level's throughput moves
10-15% from one launch to the next, and the leader of one run was the runner-up of the next.
So the answer is a set, chosen by subset selection (Gupta's procedure): a cell is in it unless
another cell is ahead of it by more than z standard errors of their difference, z the one-sided
Bonferroni quantile over its k - 1 comparisons at FAMILY_ALPHA (the rule lives with compare's tests, in
``significance``: one place for what the noise lets two measures differ by; compare asks whether a
run changed, two-sided and on a log scale, this asks which cells may be the best). The set then holds the cell
with the truly most throughput with at least 95% confidence. A level's standard error is its
spread across launches (its own, or its run's pooled launch noise at that concurrency when that
is larger: a level whose two launches agreed by chance is not taken as more precise than the
run's cells are) over the square root of its timed launches. Where no spread was measured at all,
two cells cannot be told apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from forkwise.matrix.analysis import significance
from forkwise.matrix.analysis.controls import is_control
from forkwise.matrix.analysis.launches import launch_noise
from forkwise.matrix.analysis.ordering import latest_by_cell
from forkwise.matrix.analysis.significance import FAMILY_ALPHA  # here: the chance that the set misses the best cell
from forkwise.matrix.analysis.significance import subset_critical_z as critical_z
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.types import CellRecord, LoadLevel

# --- operating points and the set that cannot be told apart ----------------------------------


@dataclass(frozen=True)
class Point:
    """A cell at its operating point: the level it is recommended at."""

    record: CellRecord
    level: LoadLevel
    stderr: float  # of level.rps


@dataclass(frozen=True)
class Candidates:
    points: list[Point]  # within both budgets, most throughput first
    over_memory: list[CellRecord] = field(default_factory=list)
    memory_unknown: list[CellRecord] = field(default_factory=list)  # a memory budget is set, no memory measured
    over_p99: list[CellRecord] = field(default_factory=list)  # no level within the p99 budget


def stderr_of(level: LoadLevel, noise: dict[int, float]) -> float:
    """The standard error of a level's rps: its spread (see the module's docstring) over the
    square root of the launches it was timed in."""
    spread = max(level.rps_stdev, noise.get(level.concurrency, 0.0) * level.rps)
    return spread / math.sqrt(max(1, len(level.launch_rps)))


def operating_level(record: CellRecord, budgets: Budgets) -> LoadLevel | None:
    """The level with the most throughput whose p99 is within the budget; None when none is."""
    within = [lv for lv in record.load if lv.latency.p99_ms <= budgets.p99_ms and lv.rps > 0]
    return max(within, key=lambda lv: (lv.rps, -lv.concurrency), default=None)


Served = tuple[str, str, str]  # model, device, backend: what a team serves, so what its question is about


def served(record: CellRecord) -> Served:
    return (record.model, record.device, record.backend)


def served_label(what: Served) -> str:
    model, device, backend = what
    return f"model {model} on {device}" + ("" if backend == "tensorflow" else f", backend {backend}")


def measured(records: Sequence[CellRecord]) -> list[CellRecord]:
    """The OK cells other than a control with load: what a recommendation chooses from."""
    return [r for r in latest_by_cell(records).values()
            if r.verdict.ok and not is_control(r.strategy) and r.load]


def questions(records: Sequence[CellRecord]) -> list[Served]:
    """One question per model, device and backend the run loaded; the most cells first."""
    counts = Counter(served(r) for r in measured(records))
    return sorted(counts, key=lambda what: (-counts[what], what))


def candidates(records: Sequence[CellRecord], budgets: Budgets, what: Served,
               choose: Callable[[CellRecord, Budgets], LoadLevel | None] = operating_level) -> Candidates:
    """The cells serving `what`, sorted into the budgets' verdicts, each at the level `choose` takes
    within the p99 budget (default: its operating level); the standard errors use the launch noise of
    the whole run."""
    noise = launch_noise(records)
    found = Candidates(points=[])
    for record in measured(records):
        if served(record) != what:
            continue
        if budgets.memory_mb is not None and record.memory is None:
            found.memory_unknown.append(record)
        elif budgets.memory_mb is not None and record.memory and record.memory.total_pss_mb > budgets.memory_mb:
            found.over_memory.append(record)
        elif (level := choose(record, budgets)) is None:
            found.over_p99.append(record)
        else:
            found.points.append(Point(record, level, stderr_of(level, noise)))
    found.points.sort(key=lambda p: (-p.level.rps, p.record.cell_id))
    return found


def clearly_ahead(a: Point, b: Point, z: float) -> bool:
    """Is a's throughput ahead of b's by more than the noise lets two cells differ by chance?"""
    return significance.clearly_ahead(a.level.rps, a.stderr, b.level.rps, b.stderr, z)


def contenders(points: Sequence[Point], alpha: float = FAMILY_ALPHA) -> list[Point]:
    """The points no other point is clearly ahead of, in the order given."""
    z = critical_z(len(points) - 1, alpha)
    return [p for p in points if not any(clearly_ahead(q, p, z) for q in points if q is not p)]


def disagreements(run_a: Sequence[CellRecord], run_b: Sequence[CellRecord], budgets: Budgets) -> list[str]:
    """Where two runs' answers contradict each other; empty when they agree.

    Two runs of the same code draw different noise, so a cell near the edge of one run's set may
    fall just outside the other's: one run could not tell it from the best, the other could. That
    is no contradiction. These are: sets with no cell in common; two cells that one run puts
    clearly in one order and the other clearly in the other; a cell one run recommends that the
    other does not consider (not OK, or out of the budgets)."""
    found = []
    for what in dict.fromkeys(questions(run_a) + questions(run_b)):
        cand = {"a": candidates(run_a, budgets, what), "b": candidates(run_b, budgets, what)}
        sets = {name: contenders(c.points) for name, c in cand.items()}
        cells = {name: {p.record.cell_id: p for p in c.points} for name, c in cand.items()}
        in_a, in_b = ({p.record.cell_id for p in sets[name]} for name in ("a", "b"))
        if in_a and in_b and not in_a & in_b:
            found.append(f"{served_label(what)}: the two runs' sets have no cell in common")
        for name, other in (("a", "b"), ("b", "a")):
            found += [f"{p.record.cell_id}: recommended by run {name}, not a candidate in run {other}"
                      for p in sets[name] if p.record.cell_id not in cells[other]]
        found += reversed_orders(cand["a"].points, cand["b"].points)
    return found


def reversed_orders(points_a: Sequence[Point], points_b: Sequence[Point]) -> list[str]:
    """Pairs of cells that run a puts clearly in one order and run b clearly in the other."""
    z_a, z_b = critical_z(len(points_a) - 1), critical_z(len(points_b) - 1)
    in_b = {p.record.cell_id: p for p in points_b}
    found = []
    for x in points_a:
        for y in points_a:
            bx, by = in_b.get(x.record.cell_id), in_b.get(y.record.cell_id)
            if bx is not None and by is not None and clearly_ahead(x, y, z_a) and clearly_ahead(by, bx, z_b):
                found.append(f"{x.record.cell_id} clearly ahead of {y.record.cell_id} in run a, "
                             "clearly behind in run b")
    return found


@dataclass(frozen=True)
class Agreement:
    """One question answered by two runs: each run's set of cells that cannot be told apart from
    its best, and whether each run's best is in the other's set."""

    question: str
    set_a: tuple[str, ...]  # cell ids, most throughput first
    set_b: tuple[str, ...]

    @property
    def common(self) -> tuple[str, ...]:
        return tuple(c for c in self.set_a if c in self.set_b)

    @property
    def bests_shared(self) -> bool:
        """Each run's best is in the other run's set."""
        return bool(self.set_a and self.set_b) and self.set_a[0] in self.set_b and self.set_b[0] in self.set_a


def agreements(run_a: Sequence[CellRecord], run_b: Sequence[CellRecord], budgets: Budgets) -> list[Agreement]:
    """Every question either run answers, with both runs' sets (see `disagreements` for what would
    make two answers contradict each other)."""
    found = []
    for what in dict.fromkeys(questions(run_a) + questions(run_b)):
        sets = [tuple(p.record.cell_id for p in contenders(candidates(run, budgets, what).points))
                for run in (run_a, run_b)]
        found.append(Agreement(served_label(what), sets[0], sets[1]))
    return found
