"""Compare two runs, and say which differences are more than noise.

Four measures are compared, each on a log scale (a relative change), cell by cell for the cells
OK in both runs: throughput and p99 latency at every concurrency level, total memory (RSS) and
cold start once per launch. For each, a run's launch-to-launch noise is pooled over its cells
(``launches.pooled_relative_spread``); a difference's standard error follows from both runs'
noise and launch counts.

The measures that follow the host's speed (all but memory) are judged beyond the run shift: the
median ratio b / a over every matched level, so that a machine that runs faster or slower as a
whole does not flag every cell. The shift itself is tested, against how far the passes of each
run drifted apart (forkwise.matrix.analysis.significance): a uniform slowdown of every cell shows as a
run shift beyond noise.

Where the question matters most, a strategy's cells are tested together: at the highest
concurrency both runs measured, the mean change of a strategy's cells (a change to a strategy
moves all of them) has the noise of one cell over the number of cells, plus the strategy effect
a run's passes measure.

A comparison makes hundreds of tests, so "significant" is decided for them all at once: the
family-wise 5% (the chance that anything is flagged when nothing changed) is split between the
run shifts (ALPHA_SHIFT), the strategies (ALPHA_STRATEGY) and each measure's cells (Metric.alpha),
and Holm's method keeps each family within its share. Every tested row shows
its minimum detectable effect: the smallest worsening it could have flagged on its own. A
changed verdict is always flagged.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from forkwise.matrix.analysis.compare_runs import (
    ALPHA_SHIFT,
    ALPHA_STRATEGY,
    COLD_START,
    MEMORY,
    METRICS,
    P99,
    THROUGHPUT,
    Key,
    Metric,
    Run,
    load_run,
)
from forkwise.matrix.analysis.controls import Controls
from forkwise.matrix.analysis.environments import EnvironmentDifference, environment_differences
from forkwise.matrix.analysis.finalists import AnswersAgree
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.recommend import Agreement, agreements, disagreements
from forkwise.matrix.analysis.significance import (
    ShiftEstimate,
    critical_z,
    estimate_shift,
    holm,
    launches_in,
    log_mean,
    p_value,
    worsening_pct,
    z_power,
)
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.types import CellRecord, Verdict

MIN_SHIFT_CELLS = 4  # cells OK in both runs needed to measure a run shift

__all__ = ["holm", "p_value", "compare", "load_run", "RunComparison", "Comparison"]


# --- differences -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One measure of one cell (or of a strategy, or a whole run) in both runs, and its test."""

    a: float | None
    b: float | None
    log_change: float | None = None  # log(b / a) beyond the run shift: what is judged
    se: float | None = None  # its standard error; None: not tested (see untested)
    untested: str = ""  # why there is no test
    z: float | None = None
    mde_pct: float | None = None  # the smallest worsening this test could have flagged on its own
    significant: bool = False

    @property
    def delta_pct(self) -> float | None:
        return None if not self.a or self.b is None else (self.b - self.a) / self.a * 100.0

    @property
    def adjusted_pct(self) -> float | None:
        return None if self.log_change is None else (math.exp(self.log_change) - 1) * 100.0


@dataclass(frozen=True)
class Shift:
    metric: str
    estimate: ShiftEstimate
    difference: Difference  # the shift's test

    @property
    def factor(self) -> float:
        return math.exp(self.estimate.log_shift)


def _spreads(metric: Metric, cell: str, key: Key, a: Run, b: Run) -> tuple[float, float] | None:
    """The launch noise each side is judged with: its run's pooled noise at this key (the other
    run's, when one run launched each cell once), else each level's own spread; None: unknown."""
    pooled = [run.spread[metric.name].get(key) for run in (a, b)]
    known = [p for p in pooled if p is not None]
    if known:
        return pooled[0] if pooled[0] is not None else known[0], pooled[1] if pooled[1] is not None else known[0]
    own = [run.own_spread(metric, cell, key) for run in (a, b)]
    known = [o for o in own if o]
    return None if not known else (own[0] or max(known), own[1] or max(known))


def _shift_var(shift: Shift | None) -> float:
    return 0.0 if shift is None else shift.estimate.median_se**2


def difference(metric: Metric, cell: str, key: Key, a: Run, b: Run, shift: Shift | None) -> Difference:
    sa, sb = a.samples[metric.name].get((cell, key)), b.samples[metric.name].get((cell, key))
    la, lb = (None if s is None else log_mean(s) for s in (sa, sb))
    shown_a, shown_b = (None if lm is None else math.exp(lm) for lm in (la, lb))
    if sa is None or sb is None or shown_a is None or shown_b is None:
        return Difference(shown_a, shown_b)
    log_change = math.log(shown_b / shown_a) - (0.0 if shift is None else shift.estimate.log_shift)
    if min(launches_in(sa), launches_in(sb)) < metric.min_launches:
        return Difference(shown_a, shown_b, log_change,
                          untested=f"fewer than {metric.min_launches} launches a side: one stall would decide it")
    spreads = _spreads(metric, cell, key, a, b)
    if spreads is None:
        return Difference(shown_a, shown_b, log_change, untested="spread unknown: one sample on each side")
    var = spreads[0] ** 2 / launches_in(sa) + spreads[1] ** 2 / launches_in(sb) + _shift_var(shift)
    return Difference(shown_a, shown_b, log_change, se=math.sqrt(var) if var > 0 else None,
                      untested="" if var > 0 else "no spread on either side")


def run_shift(metric: Metric, a: Run, b: Run) -> Shift | None:
    """The median ratio b / a over the matched samples of cells OK in both runs, tested against the
    pass drifts; None when fewer than MIN_SHIFT_CELLS cells are OK in both (judged raw)."""
    ratios: list[float] = []
    cells: set[str] = set()
    for (cell, key), sa in a.samples[metric.name].items():
        sb = b.samples[metric.name].get((cell, key))
        la, lb = log_mean(sa), None if sb is None else log_mean(sb)
        if la is not None and lb is not None:
            ratios.append(lb - la)
            cells.add(cell)
    if len(cells) < MIN_SHIFT_CELLS:
        return None
    est = estimate_shift(ratios, (a.passes[metric.name], b.passes[metric.name]))
    untested = "" if est.se else "not tested: neither run measured how its passes drift (one launch per cell)"
    return Shift(metric.name, est, Difference(1.0, math.exp(est.log_shift), est.log_shift, est.se, untested))


@dataclass(frozen=True)
class StrategyComparison:
    strategy: str
    concurrency: int
    cells: int
    difference: Difference  # a, b: geometric means of the cells' throughput


def strategy_test(strategy: str, concurrency: int, cells: list[str], a: Run, b: Run,
                  shift: Shift | None) -> StrategyComparison:
    """The mean log change of a strategy's cells: each cell's launch noise averages out over its
    cells, the strategy effect of each run (noise, passes) does not."""
    name, pa, pb = THROUGHPUT.name, a.passes[THROUGHPUT.name], b.passes[THROUGHPUT.name]
    effects = [p.strategy for p in (pa, pb) if p.strategy is not None]

    def measured_log_mean(run: Run, cell: str) -> float:
        value = log_mean(run.samples[name][(cell, concurrency)])
        assert value is not None  # strategy_tests passes only cells measured in both runs
        return value

    logs = [(measured_log_mean(a, c), measured_log_mean(b, c)) for c in cells]
    shown_a, shown_b = (math.exp(statistics.fmean(side)) for side in zip(*logs, strict=True))
    log_change = statistics.fmean(lb - la for la, lb in logs) - (0.0 if shift is None else shift.estimate.log_shift)
    spreads = _spreads(THROUGHPUT, cells[0], concurrency, a, b)
    if not effects or spreads is None:
        return StrategyComparison(strategy, concurrency, len(cells), Difference(
            shown_a, shown_b, log_change, untested="not tested: no run measured its strategy effect"))
    t = [p.strategy if p.strategy is not None else effects[0] for p in (pa, pb)]
    own = [max(0.0, s**2 - e**2) for s, e in zip(spreads, t, strict=True)]
    launches = [[launches_in(run.samples[name][(c, concurrency)]) for c in cells] for run in (a, b)]
    var = sum(own[side] / n for side in (0, 1) for n in launches[side]) / len(cells) ** 2
    var += sum(t[side] ** 2 / statistics.fmean(launches[side]) for side in (0, 1)) + _shift_var(shift)
    return StrategyComparison(strategy, concurrency, len(cells),
                              Difference(shown_a, shown_b, log_change, se=math.sqrt(var)))


def strategy_tests(a: Run, b: Run, shift: Shift | None) -> list[StrategyComparison]:
    """One test per strategy with two or more cells measured at the highest concurrency both runs have."""
    name = THROUGHPUT.name
    both = [(cell, key) for cell, key in a.samples[name] if key is not None and (cell, key) in b.samples[name]
            and log_mean(a.samples[name][(cell, key)]) is not None
            and log_mean(b.samples[name][(cell, key)]) is not None]
    if not both:
        return []
    top = max(key for _, key in both)
    by_strategy: dict[str, list[str]] = {}
    for cell, key in both:
        if key == top:
            by_strategy.setdefault(a.cells[cell].strategy, []).append(cell)
    return [strategy_test(s, top, cells, a, b, shift) for s, cells in by_strategy.items() if len(cells) >= 2]


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One cell at one concurrency (None: a cell without load in either run)."""

    cell_id: str
    concurrency: int | None
    verdict_a: Verdict | None  # None: the cell is not in run a
    verdict_b: Verdict | None
    throughput: Difference | None = None
    p99: Difference | None = None
    vs_control_a: float | None = None  # rps / the same run's control rps at this level (shown, not judged)
    vs_control_b: float | None = None
    note: str = ""
    verdict_changed: bool = False
    significant: bool = False  # a changed verdict, or a difference beyond the noise
    # The level's p99 as every report shows it (launches weighted by their requests: the combined
    # record's); the test above is on the launches' own p99s.
    p99_ms_a: float | None = None
    p99_ms_b: float | None = None

    @property
    def rps_a(self) -> float | None:
        return None if self.throughput is None else self.throughput.a

    @property
    def rps_b(self) -> float | None:
        return None if self.throughput is None else self.throughput.b

    @property
    def delta_pct(self) -> float | None:
        return None if self.throughput is None else self.throughput.delta_pct

    @property
    def adjusted_delta_pct(self) -> float | None:
        return None if self.throughput is None else self.throughput.adjusted_pct


@dataclass(frozen=True)
class CellComparison:
    """The measures taken once per launch of one cell OK in both runs."""

    cell_id: str
    memory: Difference
    cold_start: Difference


@dataclass(frozen=True)
class RunComparison:
    levels: tuple[Comparison, ...]
    cells: tuple[CellComparison, ...]
    strategies: tuple[StrategyComparison, ...]
    shifts: tuple[Shift, ...]
    runs: tuple[Run, Run]
    # The recommendation of each run within the same budgets, and where the two contradict.
    recommendation: tuple[Agreement, ...] = ()
    contradictions: tuple[str, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    environment: tuple[EnvironmentDifference, ...] = ()  # what differs between the runs' environments
    finalists: tuple[AnswersAgree, ...] = ()  # each question both runs' finalists ranked (run folders only)

    def cell_differences(self) -> list[tuple[str, Metric, Difference]]:
        """Every measure of every cell (and level), with its cell and metric."""
        out = [(f"{c.cell_id} c{c.concurrency}", m, d) for c in self.levels
               for m, d in ((THROUGHPUT, c.throughput), (P99, c.p99)) if d is not None]
        return out + [(c.cell_id, m, d) for c in self.cells
                      for m, d in ((MEMORY, c.memory), (COLD_START, c.cold_start))]


def _metric(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def _verdict_note(a: CellRecord | None, b: CellRecord | None) -> tuple[bool, str]:
    if a is None:
        return False, "only in run b"
    if b is None:
        return False, "only in run a"
    if a.verdict is not b.verdict:
        return True, f"verdict changed: {a.verdict.value} -> {b.verdict.value}"
    if not a.verdict.ok:
        return False, f"not judged: {a.verdict.value} in both runs"
    return False, ""


def _vs_control(record: CellRecord | None, concurrency: int, controls: Controls, rps: float | None) -> float | None:
    control = None if record is None else controls.control_level(record, concurrency)
    return None if control is None or rps is None else round(rps / control.rps, 3)


def compare_cell(cell: str, a: Run, b: Run, shifts: Mapping[str, Shift],
                 controls: tuple[Controls, Controls]) -> list[Comparison]:
    ra, rb = a.cells.get(cell), b.cells.get(cell)
    changed, note = _verdict_note(ra, rb)
    levels = sorted({lv.concurrency for r in (ra, rb) if r is not None for lv in r.load})
    rows = []
    for c in levels:
        tp = difference(THROUGHPUT, cell, c, a, b, shifts.get(THROUGHPUT.name))
        p99 = difference(P99, cell, c, a, b, shifts.get(P99.name))
        level_note = note or ("" if tp.a is not None and tp.b is not None else
                              f"level measured only in run {'a' if tp.a is not None else 'b'}")
        rows.append(Comparison(cell, c, ra.verdict if ra else None, rb.verdict if rb else None, tp, p99,
                               _vs_control(ra, c, controls[0], tp.a), _vs_control(rb, c, controls[1], tp.b),
                               level_note, changed, changed, _shown_p99(ra, c), _shown_p99(rb, c)))
    return rows or [Comparison(cell, None, ra.verdict if ra else None, rb.verdict if rb else None, note=note,
                               verdict_changed=changed, significant=changed)]


def _shown_p99(record: CellRecord | None, concurrency: int) -> float | None:
    level = next((lv for lv in record.load if lv.concurrency == concurrency), None) if record else None
    return None if level is None else level.latency.p99_ms


def compare(a_records: Iterable[CellRecord], b_records: Iterable[CellRecord],
            budgets: Budgets | None = None) -> RunComparison:
    """Every cell of either run (run a's order, then run b's new cells), judged all at once; and
    both runs' recommendations within `budgets` (default: the recommendation's defaults)."""
    a_records, b_records = list(a_records), list(b_records)
    a, b = Run.of(a_records), Run.of(b_records)
    shifts = {m.name: s for m in METRICS if m.follows_host and (s := run_shift(m, a, b)) is not None}
    controls = (Controls.of_run(a.cells.values()), Controls.of_run(b.cells.values()))
    order = list(a.cells) + [cid for cid in b.cells if cid not in a.cells]
    levels = [row for cid in order for row in compare_cell(cid, a, b, shifts, controls)]
    cells = [CellComparison(cid, difference(MEMORY, cid, None, a, b, None),
                            difference(COLD_START, cid, None, a, b, shifts.get(COLD_START.name)))
             for cid in order if cid in a.cells and cid in b.cells]
    budgets = budgets or Budgets()
    combined = combine_all(a_records), combine_all(b_records)
    result = RunComparison(tuple(levels), tuple(cells), tuple(strategy_tests(a, b, shifts.get(THROUGHPUT.name))),
                           tuple(shifts.values()), (a, b), tuple(agreements(*combined, budgets)),
                           tuple(disagreements(*combined, budgets)), budgets,
                           environment_differences(a_records, b_records))
    return judge(result)


# --- deciding, for every test at once ----------------------------------------------------------


def _judged(family: list[tuple[Difference, bool]], alpha: float) -> dict[int, Difference]:
    """Holm within one family at its share of the error; each test's MDE at the family's first step.
    ``family``: each difference with whether a higher value is better (which way is a worsening)."""
    # A tested difference has both a standard error and a change (difference() sets them together).
    tested = [(d, d.log_change / d.se, d.se, better) for d, better in family if d.se and d.log_change is not None]
    flags = holm([p_value(z) for _, z, _, _ in tested], alpha)
    z_mde = critical_z(alpha, len(tested)) + z_power()  # found with 80% power, not at a coin's toss
    return {id(d): dataclasses.replace(d, z=round(z, 2), significant=flag,
                                       mde_pct=round(worsening_pct(-z_mde * se if better else z_mde * se, better), 1))
            for (d, z, se, better), flag in zip(tested, flags, strict=True)}


def judge(result: RunComparison) -> RunComparison:
    judged = _judged([(s.difference, _metric(s.metric).higher_is_better) for s in result.shifts], ALPHA_SHIFT)
    judged |= _judged([(s.difference, True) for s in result.strategies], ALPHA_STRATEGY)
    for m in METRICS:
        family = [(d, m.higher_is_better) for _, metric, d in result.cell_differences() if metric is m]
        judged |= _judged(family, m.alpha)

    def new(d: Difference) -> Difference:
        return judged.get(id(d), d)

    def new_or_none(d: Difference | None) -> Difference | None:
        return None if d is None else new(d)

    levels = tuple(dataclasses.replace(c, throughput=new_or_none(c.throughput), p99=new_or_none(c.p99),
                                       significant=c.verdict_changed or any(
                                           x is not None and x.significant
                                           for x in (new_or_none(c.throughput), new_or_none(c.p99))))
                   for c in result.levels)
    return dataclasses.replace(
        result, levels=levels,
        cells=tuple(dataclasses.replace(c, memory=new(c.memory), cold_start=new(c.cold_start)) for c in result.cells),
        strategies=tuple(dataclasses.replace(s, difference=new(s.difference)) for s in result.strategies),
        shifts=tuple(dataclasses.replace(s, difference=new(s.difference)) for s in result.shifts))
