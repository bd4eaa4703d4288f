"""What a comparison of two runs says: COMPARE.md (through the report's Markdown blocks) and the
regressions a CI job gates on (``forkwise compare --max-regression``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from forkwise.matrix.analysis.compare import MIN_SHIFT_CELLS, Comparison, Difference, RunComparison, _metric
from forkwise.matrix.analysis.compare_runs import (
    ALPHA_SHIFT,
    ALPHA_STRATEGY,
    COLD_START,
    MEMORY,
    METRICS,
    P99,
    THROUGHPUT,
    Metric,
    Run,
)
from forkwise.matrix.analysis.launches import describe_noise
from forkwise.matrix.analysis.significance import FAMILY_ALPHA, worsening_pct
from forkwise.matrix.publish.document import MISSING, Block, Heading, Items, Para, Table, render_markdown
from forkwise.matrix.records.types import Verdict

# --- regressions: what fails a CI job ----------------------------------------------------------


def worsening(d: Difference, higher_is_better: bool) -> float | None:
    """How much worse b is than a beyond the shift, in percent (negative: better)."""
    return None if d.log_change is None else worsening_pct(d.log_change, higher_is_better)


def regressions(result: RunComparison, max_regression_pct: float = 0.0) -> list[str]:
    """Every worsening beyond the noise by more than ``max_regression_pct``, and every cell OK in
    run a that is not in run b: one line each (empty: nothing fails)."""
    found = [f"{c.cell_id}: verdict {c.verdict_a.value} -> {c.verdict_b.value}"
             for c in _one_per_cell(result.levels)
             if c.verdict_a is Verdict.OK and c.verdict_b is not None and c.verdict_b is not Verdict.OK]

    def check(label: str, d: Difference, higher_is_better: bool) -> None:
        worse = worsening(d, higher_is_better)
        if d.significant and worse is not None and worse > max_regression_pct:
            found.append(f"{label}: {worse:.1f}% worse beyond the noise (z {d.z:+.1f}, "
                         f"smallest detectable {d.mde_pct:.1f}%)")

    for s in result.shifts:
        check(f"{s.metric} of the whole run (run shift)", s.difference, _metric(s.metric).higher_is_better)
    for strategy in result.strategies:
        check(f"throughput of {strategy.strategy} at c{strategy.concurrency} ({strategy.cells} cells)",
              strategy.difference, True)
    for label, metric, d in result.cell_differences():
        check(f"{metric.name} of {label}", d, metric.higher_is_better)
    return found


def _one_per_cell(rows: Iterable[Comparison]) -> list[Comparison]:
    return list({c.cell_id: c for c in rows}.values())


# --- COMPARE.md ----------------------------------------------------------------------------------


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.1f}%"


def _mde(d: Difference | None) -> str:
    if d is None:
        return MISSING
    return d.untested or (MISSING if d.mde_pct is None else f"{d.mde_pct:.1f}%")


def _flag(d: Difference | None) -> str:
    return "yes" if d is not None and d.significant else "n.s."


def _verdicts(c: Comparison) -> str:
    a = MISSING if c.verdict_a is None else c.verdict_a.value
    b = MISSING if c.verdict_b is None else c.verdict_b.value
    return a if a == b else f"{a} -> {b}"


def level_row(c: Comparison) -> tuple[str, ...]:
    tp, p99 = c.throughput, c.p99
    controls = (f"{_num(c.vs_control_a, '.3f')} / {_num(c.vs_control_b, '.3f')}"
                if c.vs_control_a is not None or c.vs_control_b is not None else MISSING)
    return (c.cell_id, _num(c.concurrency, "d"), _num(c.rps_a, ",.1f"), _num(c.rps_b, ",.1f"), _pct(c.delta_pct),
            _pct(c.adjusted_delta_pct), _num(tp.z if tp else None, "+.1f"), _mde(tp),
            _num(c.p99_ms_a, ".1f"), _num(c.p99_ms_b, ".1f"),
            _pct(p99.adjusted_pct if p99 else None), _mde(p99),
            controls, "yes" if c.significant else "n.s.", _verdicts(c), c.note)


LEVEL_HEADERS = ("cell", "concurrency", "rps a", "rps b", "delta", "beyond shift", "z", "MDE",
                 "p99 a (ms)", "p99 b (ms)", "p99 beyond shift", "p99 MDE", "vs control a / b", "significant",
                 "verdict", "note")


def cell_rows(result: RunComparison) -> list[tuple[str, ...]]:
    return [(c.cell_id, _num(c.memory.a, ",.0f"), _num(c.memory.b, ",.0f"), _pct(c.memory.adjusted_pct),
             _mde(c.memory), _flag(c.memory), _num(c.cold_start.a, ".2f"), _num(c.cold_start.b, ".2f"),
             _pct(c.cold_start.adjusted_pct), _mde(c.cold_start), _flag(c.cold_start))
            for c in result.cells if c.memory.a is not None or c.cold_start.a is not None]


def strategy_rows(result: RunComparison) -> list[tuple[str, ...]]:
    return [(s.strategy, str(s.cells), _num(s.difference.a, ",.1f"), _num(s.difference.b, ",.1f"),
             _pct(s.difference.adjusted_pct), _num(s.difference.z, "+.1f"), _mde(s.difference), _flag(s.difference))
            for s in result.strategies]


def _count(result: RunComparison, metric: Metric) -> str:
    ds = [d for _, m, d in result.cell_differences() if m is metric and d.log_change is not None]
    judged = [d for d in ds if d.se is not None]
    shown = f" ({len(ds) - len(judged)} more shown, not judged)" if len(judged) < len(ds) else ""
    return f"{sum(d.significant for d in judged)} of {len(judged)} {metric.name}{shown}"


def summary(result: RunComparison) -> str:
    both = [c for c in _one_per_cell(result.levels) if c.verdict_a is not None and c.verdict_b is not None]
    one_run = len(_one_per_cell(result.levels)) - len(both)
    flagged = [s.strategy for s in result.strategies if s.difference.significant]
    top = f" at concurrency {result.strategies[0].concurrency}" if result.strategies else ""
    text = (f"{_count(result, THROUGHPUT)} levels of cells OK in both runs differ by more than the noise; "
            f"{_count(result, P99)} levels, {_count(result, MEMORY)} and {_count(result, COLD_START)} measures of "
            f"cells differ by more than the noise; {len(flagged)} of {len(result.strategies)} strategies{top} "
            f"differ as a whole" + (f" ({', '.join(flagged)})" if flagged else "") +
            f"; {sum(c.verdict_changed for c in both)} cells changed verdict")
    text += f"; {one_run} cells ran in one run only." if one_run else "."
    mdes = [f"{label} {statistics.median(values):.1f}%" for label, values in _mdes(result) if values]
    return (text + (" Median minimum detectable effect: " + ", ".join(mdes) + "." if mdes else "")
            + launches_needed_text(result))


TARGET_MDE_PCT = 5.0  # the difference between strategies a comparison of two runs should see


def launches_needed_text(result: RunComparison) -> str:
    """How many launches a cell would need for the strategies' median MDE to reach TARGET_MDE_PCT
    (the MDE shrinks with the square root of the launches)."""
    values = [s.difference.mde_pct for s in result.strategies if s.difference.mde_pct is not None]
    launches = max((p.passes for run in result.runs for p in run.passes.values()), default=0)
    if not values or not launches:
        return ""
    mde = statistics.median(values)
    needed = math.ceil(launches * (mde / TARGET_MDE_PCT) ** 2)
    return (f" To detect {TARGET_MDE_PCT:g}% between strategies here: about {needed} launches a cell "
            f"(now {launches}); RESULTS.md's finalists compare the closest cells paired, within rounds, instead.") \
        if needed > launches else ""


def _mdes(result: RunComparison) -> list[tuple[str, list[float]]]:
    """The MDEs of each kind of test, for the summary's one line."""
    out = [("strategies" + (f" at c{result.strategies[0].concurrency}" if result.strategies else ""),
            [s.difference.mde_pct for s in result.strategies if s.difference.mde_pct is not None])]
    return out + [(f"{m.name} per {'level' if m is THROUGHPUT or m is P99 else 'cell'}",
                   [d.mde_pct for _, metric, d in result.cell_differences() if metric is m and d.mde_pct is not None])
                  for m in METRICS]


def shift_text(result: RunComparison) -> str:
    if not any(s.metric == THROUGHPUT.name for s in result.shifts):
        return (f"Fewer than {MIN_SHIFT_CELLS} cells are OK in both runs: no run shift is measured; "
                "levels are judged raw.")
    parts = []
    for s in result.shifts:
        d = s.difference
        verdict = (d.untested if d.untested else
                   f"{'beyond the noise' if d.significant else 'within the noise'} (z {d.z:+.1f}; the smallest "
                   f"shift it could have flagged: {d.mde_pct:.1f}% worse)")
        parts.append(f"{s.metric}: run b as a whole ran at {s.factor:.3f}x run a (the median ratio over "
                     f"{s.estimate.levels} measures OK in both), {verdict}")
    drift = "; ".join(f"run {n}: {_pass_text(run)}" for n, run in zip("ab", result.runs, strict=True))
    return ("Run shift, tested against how far each run's own passes drifted apart (" + drift + "): "
            + "; ".join(parts) + ". Each level is judged beyond its measure's shift (the 'beyond shift' columns); "
            "memory is judged raw.")


def _pass_text(run: Run) -> str:
    p = run.passes[THROUGHPUT.name]
    if p.drift is None:
        return "one launch per cell, not measured"
    effect = "" if p.strategy is None else f", a strategy's cells {p.strategy * 100:.1f}%"
    return f"{p.passes} passes, throughput drift {p.drift * 100:.1f}%{effect}"


def noise_items(result: RunComparison) -> Items:
    items = []
    for name, run in zip("ab", result.runs, strict=True):
        per_metric = [f"throughput {describe_noise(run.spread[THROUGHPUT.name])}"]
        per_metric += [f"{m.name} {_describe(run.spread[m.name])}" for m in METRICS if m is not THROUGHPUT]
        items.append(f"run {name}: " + "; ".join(per_metric))
    return Items("Launch-to-launch noise of each run (relative stdev of one launch, pooled over its OK cells), "
                 "the spread every test is judged with:", tuple(items))


def _describe(spread: dict) -> str:
    if not spread:
        return "not measured (each cell launched once)"
    return ", ".join(f"{'' if k is None else f'c{k} '}{v * 100:.1f}%" for k, v in spread.items())


def method_text() -> str:
    shares = "; ".join(f"{m.name} of each cell {m.alpha:.2%}" for m in METRICS)
    return (f"Significance is decided for every test at once: the family-wise {FAMILY_ALPHA:.0%} (the chance "
            f"that anything is flagged when nothing changed) is split into the run shifts {ALPHA_SHIFT:.2%}, "
            f"the strategies at the highest concurrency {ALPHA_STRATEGY:.2%} (where power matters most), {shares}; "
            "Holm's method keeps each family within its share. MDE (minimum detectable effect): the smallest "
            "worsening (a slowdown of throughput, a growth of the others) a test finds with 80% power on its own, "
            "given its noise and launch counts; the MDE shrinks with the square root of the launches (to halve "
            "it, launch four times as often). A changed verdict is always flagged.")


def render_comparison(result: RunComparison) -> str:
    """COMPARE.md: the comparison's document, through the report's Markdown renderer."""
    return render_markdown(comparison_document(result))


def comparison_document(result: RunComparison) -> list[Block]:
    blocks: list[Block] = [Para(summary(result)), *environment_blocks(result), Para(shift_text(result)),
                           noise_items(result), Para(method_text())]
    if result.strategies:
        top = result.strategies[0].concurrency
        blocks += [Heading(f"Strategies at concurrency {top}, all their cells together", 2),
                   Table(("strategy", "cells", "rps a (geometric mean)", "rps b", "beyond shift", "z", "MDE",
                          "significant"), tuple(strategy_rows(result)))]
    rows = tuple(level_row(c) for c in result.levels) or ((("no cells",) + ("",) * (len(LEVEL_HEADERS) - 1)),)
    blocks += [Heading("Every level", 2), Table(LEVEL_HEADERS, rows)]
    cells = cell_rows(result)
    if cells:
        blocks += [Heading("Memory and cold start, once per launch", 2),
                   Table(("cell", "RSS a (MB)", "RSS b (MB)", "change", "MDE", "significant", "cold start a (s)",
                          "cold start b (s)", "beyond shift", "MDE", "significant"), tuple(cells))]
    return blocks + recommendation_blocks(result) + finalists_blocks(result)


def finalists_blocks(result: RunComparison) -> list[Block]:
    """Each question both runs' finalists ranked: each best, each top set, whether they agree."""
    if not result.finalists:
        return []
    rows = tuple((f.served, f.best_a, ", ".join(f.top_a), f.best_b, ", ".join(f.top_b), "yes" if f.agree else "no")
                 for f in result.finalists)
    return [Heading("The finalists' answer in both runs", 2),
            Para("Each run's best from its interleaved rounds, and its top set (the best and every finalist not "
                 "behind it). The two answers agree when each run's best is in the other's top set."),
            Table(("question", "best in a", "top set of a", "best in b", "top set of b", "agree"), rows)]


def environment_blocks(result: RunComparison) -> list[Block]:
    """What differs between the runs' environments, beside the flags: a flag that coincides with a
    change of machine, kernel or library may not be the user's change."""
    if not result.environment:
        return [Para("The two runs' environments are the same (commit, packages, kernel and platform, Python, "
                     "CPU, cores, memory, GPU, host label).", "Environments:")]
    flagged = bool(result.strategies and any(s.difference.significant for s in result.strategies)) or any(
        d.significant for _, _, d in result.cell_differences()) or any(s.difference.significant for s in result.shifts)
    aspects = ", ".join(d.aspect for d in result.environment)
    said = (f"what this comparison flags coincides with a change of {aspects}: the flags may come from that "
            "change rather than from yours" if flagged else f"they differ in {aspects}; nothing is flagged")
    rows = tuple((d.aspect, ", ".join(d.a), ", ".join(d.b)) for d in result.environment)
    return [Para(f"The two runs were not made in the same environment: {said}.", "Environments:"),
            Table(("what differs", "run a", "run b"), rows)]


def recommendation_blocks(result: RunComparison) -> list[Block]:
    """Each run's recommended set within the same budgets, and whether the two answers agree."""
    if not result.recommendation:
        return []
    rows = tuple((a.question, str(len(a.set_a)), str(len(a.set_b)), str(len(a.common)),
                  "yes" if a.bests_shared else "no", ", ".join(a.common) or MISSING)
                 for a in result.recommendation)
    verdict = ("No contradiction: no cell is clearly ahead of another in one run and clearly behind it in the other, "
               "every cell either run recommends is a candidate in the other, and the sets share cells."
               if not result.contradictions else "Contradictions: " + "; ".join(result.contradictions) + ".")
    return [Heading("The recommendation in both runs", 2),
            Para(f"Within {result.budgets.describe()}: each run's set of cells that cannot be told apart from its "
                 f"best (RESULTS.md's recommendation). Two runs of the same code agree when their sets share cells, "
                 f"each run's best is in the other's set, and nothing contradicts. {verdict}"),
            Table(("question", "cells in a's set", "in b's set", "in both", "each best in the other's set",
                   "in both sets"), rows)]
