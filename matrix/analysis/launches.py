"""A cell measured in several launches: one combined record, and the run's launch-to-launch noise.

Why launches: on a shared 2-core machine, the throughput of one server launch differs from
the next by more than its own per-second samples vary (worker placement, the neighbours'
load, the minute the launch happened to run in). A run that measures every cell once
cannot see that noise, so a second run looks "significantly" different. The matrix runner
therefore measures each cell in ``repeats`` launches, in separate passes over the matrix in
the same order, so that every cell's launches lie one pass apart (this machine has slow
spells of a minute or two: launches a minute apart share them, and would agree by chance),
and the spread of a level covers all its launches.

``combine`` merges a cell's per-launch records (records.jsonl keeps them as they were
measured) into the one record that tables, plots and comparisons use. ``launch_noise``
pools the launch-to-launch spread of every OK cell of a run, per concurrency: the noise
floor a comparison applies to any cell whose own few launches happened to agree closely
(two launches can agree by chance, or both land in the slow mode of a cell that has two).
Both run in the process of ``forkwise matrix``, ``report`` or ``compare``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from forkwise.matrix.records.types import CellRecord, ErrorCounts, Latency, LoadLevel, ModelServerStats, adding_up
from forkwise.matrix.verdicts import combined_verdict

# Counters that add up over launches: the fields their record classes mark so (records.ADDS_UP).
_LEVEL_SUMS = adding_up(LoadLevel)
_RECORD_SUMS = adding_up(CellRecord)
_MODEL_SERVER_SUMS = adding_up(ModelServerStats)

K = TypeVar("K")  # what a pooled spread is keyed by: a concurrency, or None for a per-cell measure


def _sum_errors(errors: Iterable[ErrorCounts]) -> ErrorCounts:
    errors = list(errors)
    return ErrorCounts(**{f.name: sum(getattr(e, f.name) for e in errors) for f in dataclasses.fields(ErrorCounts)})


def _mean_latency(levels: Sequence[LoadLevel]) -> Latency:
    """Percentiles averaged over launches, weighted by answered requests (each launch's own
    percentiles are exact; their weighted mean is an approximation); max is the true max."""
    weights = [max(lv.requests, 1) for lv in levels]
    total = sum(weights)

    def mean(attr: str) -> float:
        return round(sum(getattr(lv.latency, attr) * w for lv, w in zip(levels, weights, strict=True)) / total, 3)

    return Latency(p50_ms=mean("p50_ms"), p90_ms=mean("p90_ms"), p99_ms=mean("p99_ms"),
                   max_ms=max(lv.latency.max_ms for lv in levels), mean_ms=mean("mean_ms"))


def combine_levels(levels: Sequence[LoadLevel]) -> LoadLevel:
    """One concurrency level measured in several launches -> one level.

    Every launch counts, one that ran in a slow spell of the host too (``LoadLevel.host_slow``,
    counted in ``launches_slow``): setting such launches aside would pick the fast ones and lower
    the noise the run reports. Rows, errors and answers checked count over every launch.
    """
    if len(levels) == 1:
        return levels[0]
    samples = tuple(x for lv in levels for x in lv.rps_samples)
    return dataclasses.replace(
        levels[0],
        **{name: round(sum(getattr(lv, name) for lv in levels), 3) for name in _LEVEL_SUMS},
        rps=round(statistics.fmean(samples), 1) if samples else 0.0,
        rps_stdev=round(statistics.stdev(samples), 1) if len(samples) > 1 else 0.0,
        rps_samples=samples,
        latency=_mean_latency(levels),
        errors=_sum_errors(lv.errors for lv in levels),
        launch_rps=tuple(lv.rps for lv in levels),
        host_slowdown=max(lv.host_slowdown for lv in levels),
        launches_slow=sum(lv.host_slow for lv in levels),
        longest_idle_s=_longest(lv.longest_idle_s for lv in levels),
        longest_worker_stall_s=_longest(lv.longest_worker_stall_s for lv in levels),
    )


def _longest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _combined_load(launches: Sequence[CellRecord]) -> tuple[LoadLevel, ...]:
    by_level: dict[int, list[LoadLevel]] = {}
    for record in launches:
        for level in record.load:
            by_level.setdefault(level.concurrency, []).append(level)
    return tuple(combine_levels(levels) for levels in by_level.values())


def _combined_model_server(launches: Sequence[CellRecord]) -> ModelServerStats | None:
    """Counts and call sizes added up over the launches; the queue-wait mean weighted by requests, its
    percentiles the worst launch's (percentiles do not add up)."""
    parts = [r.model_server for r in launches if r.model_server is not None]
    if not parts:
        return None
    width = max(len(p.calls_by_rows) for p in parts)
    waited = [p for p in parts if p.queue_wait_mean_ms is not None]
    return dataclasses.replace(
        parts[0],
        **{name: sum(getattr(p, name) for p in parts) for name in _MODEL_SERVER_SUMS},
        largest_call=max(p.largest_call for p in parts),
        calls_by_rows=tuple(sum(p.calls_by_rows[i] for p in parts if i < len(p.calls_by_rows)) for i in range(width)),
        queue_wait_mean_ms=_weighted_mean([(p.queue_wait_mean_ms or 0.0, p.requests + p.expired) for p in waited]),
        queue_wait_p50_ms=max((p.queue_wait_p50_ms for p in waited if p.queue_wait_p50_ms is not None), default=None),
        queue_wait_p99_ms=max((p.queue_wait_p99_ms for p in waited if p.queue_wait_p99_ms is not None), default=None),
    )


def _weighted_mean(pairs: Sequence[tuple[float, int]]) -> float | None:
    weight = sum(w for _, w in pairs)
    return round(sum(x * w for x, w in pairs) / weight, 3) if weight else None


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 3) if present else None


def combine(launches: Sequence[CellRecord]) -> CellRecord:
    """A cell's launches (in launch order) -> one record.

    The verdict is OK only if every launch was OK; otherwise it is the first launch's
    verdict that was not (verdicts.combined_verdict), with that launch's log evidence and
    stacks. Findings of later launches are prefixed with their launch number. Cold starts are
    averaged (each launch's own is kept in the timings); memory and environment are the first launch's.
    """
    if not launches:
        raise ValueError("combine needs at least one launch")
    if len(launches) == 1:
        return launches[0]
    first = launches[0]
    failed = next((r for r in launches if not r.verdict.ok), None)
    findings = list(first.evidence.findings)
    timings = dict(first.evidence.timings_s)
    for number, record in enumerate(launches[1:], 2):
        findings += [f"launch {number}: {text}" for text in record.evidence.findings]
    for number, record in enumerate(launches, 1):
        timings.update({f"launch{number}.{k}": v for k, v in record.evidence.timings_s.items()
                        if k in ("cold_start_s", "warm_all_s")})
    return dataclasses.replace(
        first,
        verdict=combined_verdict([r.verdict for r in launches]),
        **{name: sum(getattr(r, name) for r in launches) for name in _RECORD_SUMS},
        errors=_sum_errors(r.errors for r in launches),
        worker_pids=tuple(sorted({pid for r in launches for pid in r.worker_pids})),
        cold_start_s=_mean_or_none(r.cold_start_s for r in launches),
        warm_all_s=_mean_or_none(r.warm_all_s for r in launches),
        evidence=dataclasses.replace((failed or first).evidence, findings=tuple(findings), timings_s=timings),
        load=_combined_load(launches),
        model_server=_combined_model_server(launches),
        launches=sum(r.launches for r in launches),
    )


def combine_all(records: Iterable[CellRecord]) -> list[CellRecord]:
    """Per-launch records, as records.jsonl holds them -> one record per cell, in first-seen order.

    Records that already combine several launches (a results.json) pass through unchanged.
    """
    by_cell: dict[str, list[CellRecord]] = {}
    for record in records:
        by_cell.setdefault(record.cell_id, []).append(record)
    return [combine(launches) for launches in by_cell.values()]


# --- the order of a pass ------------------------------------------------------------------------


T = TypeVar("T")


def pass_order(cells: Sequence[T], strategy_of: Callable[[T], str]) -> list[T]:
    """The cells of a pass with each strategy's cells spread evenly over it, not back to back.

    Cells measured one after the other share the host's slow spells: in the profile's order a
    strategy's cells run in one stretch of a pass and move together (compare measures this as the
    strategy effect, about 4% per pass on the machine that made results/default), which no number
    of cells averages out. Spread over the pass, each meets its own spell, so a test of a strategy
    as a whole averages them. The i-th of a strategy's k cells goes at (i + 1/2) / k of the pass;
    ties keep the profile's order. Every pass uses the same order, so launches lie one pass apart.
    """
    counts: dict[str, int] = {}
    for cell in cells:
        counts[strategy_of(cell)] = counts.get(strategy_of(cell), 0) + 1
    seen: dict[str, int] = {}
    placed = []
    for index, cell in enumerate(cells):
        strategy = strategy_of(cell)
        seen[strategy] = seen.get(strategy, 0) + 1
        placed.append(((seen[strategy] - 0.5) / counts[strategy], index, cell))
    return [cell for _, _, cell in sorted(placed, key=lambda p: p[:2])]


# --- the run's launch-to-launch noise ---------------------------------------------------------


NOT_MEASURED = "not measured (each cell launched once)"


def describe_noise(noise: Mapping[Any, float]) -> str:  # keyed by concurrency (None: per cell)
    """'c1 9.7%, c8 7.3%, ...', or that no cell was launched twice."""
    return ", ".join(f"c{c} {v * 100:.1f}%" for c, v in noise.items()) or NOT_MEASURED


def launch_noise(records: Iterable[CellRecord]) -> dict[int, float]:
    """Per concurrency: the relative launch-to-launch stdev of rps, pooled over the OK cells
    measured in two or more launches (the textbook pooled variance of each cell's launch means
    over its own mean). A cell whose launches stalled raises it, deliberately: stalls are part of
    what a second run of the matrix can meet on this machine, and so are launches that ran in a
    slow spell of the host."""
    return pooled_relative_spread((level.concurrency, level.launch_rps)
                                  for record in records if record.verdict.ok for level in record.load)


def pooled_relative_spread(samples: Iterable[tuple[K, Sequence[float]]]) -> dict[K, float]:
    """Per key: the relative stdev of one launch's value, pooled over every sample of two or more
    launches (each sample's variance of value / its mean, weighted by its degrees of freedom)."""
    sums: dict = {}  # key -> [sum of (n - 1) * variance, sum of (n - 1)]
    for key, values in samples:
        if len(values) < 2 or min(values) <= 0:
            continue
        centre = statistics.fmean(values)
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += (len(values) - 1) * statistics.variance([v / centre for v in values])
        acc[1] += len(values) - 1
    return {k: round(math.sqrt(total / df), 4) for k, (total, df) in sorted(sums.items(), key=_key_order)}


def _key_order(item: tuple[K, list[float]]) -> tuple[bool, K | int]:
    key = item[0]
    return (key is not None, key if key is not None else 0)
