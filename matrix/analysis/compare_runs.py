"""What ``compare`` compares: the measures (throughput, p99, memory, cold start), each with its
share of the family-wise error, and one run's samples of them, cell by cell and launch by launch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from forkwise.errors import RecordError
from forkwise.matrix.analysis.launches import combine_all, pooled_relative_spread
from forkwise.matrix.analysis.significance import FAMILY_ALPHA, PassNoise, Sample, SampleKey, pass_noise, tail_spread
from forkwise.matrix.records.jsonl import RECORDS_FILE, read_records
from forkwise.matrix.records.types import CellRecord

RESULTS_FILE = "results.json"
Key = int | None  # a concurrency, or None for a measure taken once per launch


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    follows_host: bool  # a faster or slower host moves it: judged beyond the run shift
    alpha: float  # its per-cell tests' share of the family-wise error
    read: Callable[[CellRecord], dict[Key, float]]  # one launch's values
    # A record combining several launches: each launch's values, where the record keeps them.
    read_combined: Callable[[CellRecord], dict[Key, Sample]]
    # Now and then a launch meets a stall that multiplies its value: the spread is fitted to the
    # run's tail of launch-to-launch ratios (significance.tail_spread) where that is wider.
    heavy_tailed: bool = False
    # Fewer launches a side than this and one launch's stall decides the test: shown, not judged.
    min_launches: int = 1


def _cold_starts(record: CellRecord) -> dict[Key, Sample]:
    kept = [record.evidence.timings_s.get(f"launch{n}.cold_start_s") for n in range(1, record.launches + 1)]
    if any(v is not None for v in kept):
        return {None: tuple(kept)}
    return {} if record.cold_start_s is None else {None: (record.cold_start_s,)}


def _once(read: Callable[[CellRecord], dict[Key, float]]) -> Callable[[CellRecord], dict[Key, Sample]]:
    return lambda record: {k: (v,) for k, v in read(record).items()}


def _rps(r: CellRecord) -> dict[Key, float]:
    return {lv.concurrency: lv.rps for lv in r.load if lv.rps > 0}


def _p99(r: CellRecord) -> dict[Key, float]:
    return {lv.concurrency: lv.latency.p99_ms for lv in r.load if lv.rps > 0 and lv.latency.p99_ms > 0}


def _rss(r: CellRecord) -> dict[Key, float]:
    return {None: r.memory.total_rss_mb} if r.memory is not None and r.memory.total_rss_mb > 0 else {}


def _cold(r: CellRecord) -> dict[Key, float]:
    return {} if r.cold_start_s is None or r.cold_start_s <= 0 else {None: r.cold_start_s}


THROUGHPUT = Metric("throughput", "req/s", True, True, 0.005, _rps,
                    lambda r: {lv.concurrency: lv.launch_rps or (lv.rps,) for lv in r.load if lv.rps > 0})
# A p99 of a short level is one stall away from 5-10x (two default runs of one code: 18.8 -> 167 ms at
# c8 with 2 launches a side): judged only where each side has 3 launches or more (default: c32).
P99 = Metric("p99 latency", "ms", False, True, 0.0025, _p99, _once(_p99), heavy_tailed=True, min_launches=3)
MEMORY = Metric("memory (total RSS)", "MB", False, False, 0.0015, _rss, _once(_rss))
COLD_START = Metric("cold start", "s", False, True, 0.001, _cold, _cold_starts)
METRICS = (THROUGHPUT, P99, MEMORY, COLD_START)
ALPHA_SHIFT = 0.005  # the run shifts
ALPHA_STRATEGY = 0.035  # each strategy's cells together, at the highest concurrency: where power matters
assert math.isclose(ALPHA_SHIFT + ALPHA_STRATEGY + sum(m.alpha for m in METRICS), FAMILY_ALPHA)


# --- one run ---------------------------------------------------------------------------------


def _per_launch(metric: Metric, launches: list[CellRecord]) -> dict[Key, Sample]:
    """Each launch's value per key, every launch counted (as in the combined record)."""
    values = [metric.read(r) for r in launches]
    return {key: tuple(v.get(key) for v in values) for key in dict.fromkeys(k for v in values for k in v)}


def _samples(metric: Metric, launches: list[CellRecord]) -> dict[Key, Sample]:
    """A cell's values per key, one per launch (a combined record keeps its launches' own)."""
    return metric.read_combined(launches[0]) if len(launches) == 1 else _per_launch(metric, launches)


@dataclass(frozen=True)
class Run:
    """One run's cells (combined, in first-seen order) and, per metric, its OK cells' samples and noise."""

    cells: dict[str, CellRecord]
    samples: dict[str, dict[SampleKey, Sample]]  # metric name -> (cell, key) -> one value per launch
    spread: dict[str, dict[Key, float]]  # metric name -> key -> relative stdev of one launch
    passes: dict[str, PassNoise]  # metric name -> the pass drift and strategy effect

    @classmethod
    def of(cls, records: Iterable[CellRecord]) -> Run:
        launches: dict[str, list[CellRecord]] = {}
        for record in records:
            launches.setdefault(record.cell_id, []).append(record)
        combined = combine_all(r for ls in launches.values() for r in ls)
        cells = dict(zip(launches, combined, strict=True))
        samples, spread, passes = {}, {}, {}
        for m in METRICS:
            samples[m.name] = {(cid, key): sample for cid, ls in launches.items() if cells[cid].verdict.ok
                               for key, sample in _samples(m, ls).items()}
            spread[m.name] = pooled_relative_spread(
                (key, [v for v in s if v is not None]) for (_, key), s in samples[m.name].items())
            tail = tail_spread(samples[m.name]) if m.heavy_tailed else None
            if tail is not None:
                spread[m.name] = {key: max(value, tail) for key, value in spread[m.name].items()}
            passes[m.name] = pass_noise(samples[m.name], lambda cid: cells[cid].strategy)
        return cls(cells, samples, spread, passes)

    def own_spread(self, metric: Metric, cell: str, key: Key) -> float | None:
        """A single launch's own spread over its intervals (throughput only): a floor, not the launch noise."""
        record = self.cells.get(cell)
        level = None if record is None or metric is not THROUGHPUT else next(
            (lv for lv in record.load if lv.concurrency == key), None)
        if level is None or len(level.rps_samples) <= 1 or level.rps <= 0:
            return None
        return level.rps_stdev / level.rps


def load_run(path: Path) -> list[CellRecord]:
    """The records of one run: dir/records.jsonl (every launch as measured) if present, else
    dir/results.json (combined records), or such a file itself."""
    path = Path(path)
    if path.is_file():
        return list(read_records(path))
    for name in (RECORDS_FILE, RESULTS_FILE):
        if (path / name).exists():
            return list(read_records(path / name))
    raise RecordError(f"{path}: neither {RECORDS_FILE} nor {RESULTS_FILE} found")
