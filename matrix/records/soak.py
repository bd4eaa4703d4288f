"""The soak scenario's record and its arithmetic: what grew with time and with requests, fitted.

A soak cell carries load for a set time at a fixed fraction of its own measured capacity and samples
its processes every interval (``forkwise.matrix.run.soak``). Here, pure: the samples, a least-squares
line through them with the confidence interval of its slope (Student's t, computed here: no SciPy),
and the bounds that make a growth a leak (``leaks``; the verdict rule ``verdicts.judge_soak`` reads
them). Imports nothing of the record's other types: ``types`` imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from forkwise.matrix.records.stats import t975

SOAK = "soak"  # the scenario's name (a value of the scenario axis)
# The growth bounds. A fit whose lower 95% bound is beyond one is a leak: growth, not noise.
RSS_BOUND_PCT_PER_10MIN = 5.0  # total RSS of the deployment, % of its level after the warm-up
FDS_ALLOWANCE_PER_10MIN = 4.0  # open file descriptors, all processes: a handful (a log reopened, a lazy socket)
CONNS_ALLOWANCE_PER_10MIN = 2.0  # the app's database connections (PostgreSQL only)
TEN_MINUTES_S = 600.0
TEN_K_REQUESTS = 10_000.0
MIN_FITTED = 4  # intervals a growth is fitted to, at least (after the warm-up)
CONFIDENCE = 0.95


def warmup_intervals(n: int) -> int:
    """Leading intervals left out of every fit: the allocator's arenas and the runtime's caches
    settle under the first load (a tenth of the soak, at least one interval)."""
    return max(1, math.ceil(n / 10))


@dataclass(frozen=True)
class Slope:
    """A least-squares line's slope and its 95% interval (Student's t, n - 2 degrees of freedom)."""

    slope: float
    low: float
    high: float
    intercept: float
    points: int


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Slope:
    """Least squares y = a + b x; the interval of b from the residuals' spread."""
    n = len(xs)
    if n != len(ys) or n < 3:
        raise ValueError(f"a fitted line needs at least 3 points of (x, y), got {n} and {len(ys)}")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a fitted line needs at least two distinct x")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(residual / (n - 2) / sxx)
    half = t975(n - 2) * se
    return Slope(b, b - half, b + half, a, n)


@dataclass(frozen=True)
class Growth:
    """One resource's growth over a soak, from the fit after the warm-up: per 10 minutes and per
    10,000 requests, with 95% intervals. `pct`: in % of the fitted level at the first kept interval
    (memory); otherwise in the resource's own unit (descriptors, connections)."""

    resource: str  # total_rss_mb, fds, db_connections
    pct: bool
    per_10min: float
    per_10min_low: float
    per_10min_high: float
    per_10k_requests: float
    per_10k_low: float
    per_10k_high: float
    start: float  # the fitted level at the first kept interval
    points: int


def growth(resource: str, ts: Sequence[float], requests: Sequence[float], ys: Sequence[float],
           pct: bool) -> Growth | None:
    """The growth of `ys` against time and against requests done; None with too few points."""
    if len(ys) < MIN_FITTED or len(set(ts)) < 2 or len(set(requests)) < 2:
        return None
    by_time, by_requests = fit_line(ts, ys), fit_line(requests, ys)
    start = by_time.intercept + by_time.slope * ts[0]
    scale = (100.0 / start if start > 0 else 0.0) if pct else 1.0

    def per(s: Slope, unit: float) -> tuple[float, float, float]:
        mid, low, high = (round(x * unit * scale, 3) + 0.0 for x in (s.slope, s.low, s.high))  # + 0.0: no -0.0
        return mid, low, high

    return Growth(resource, pct, *per(by_time, TEN_MINUTES_S), *per(by_requests, TEN_K_REQUESTS),
                  round(start, 2), by_time.points)


@dataclass(frozen=True)
class SoakProcess:
    """One process at one interval's end."""

    role: str
    pid: int
    rss_mb: float
    pss_mb: float
    uss_mb: float
    fds: int


@dataclass(frozen=True)
class SoakInterval:
    """One interval of the soak: its load, and every process at its end."""

    t_s: float  # seconds from the soak's start to this interval's end
    requests: int  # answered 200 since the soak began (the x of the per-request fit)
    ok: int  # answered 200 in this interval
    timeout: int  # given up on after the cell's patience
    connect: int  # refused or reset connections
    http_4xx: int
    http_5xx: int
    p50_ms: float | None  # of this interval's 200s, from each request's intended start
    p99_ms: float | None
    total_rss_mb: float
    total_pss_mb: float
    total_uss_mb: float
    fds: int  # open file descriptors of every process
    db_connections: int | None  # the app's PostgreSQL connections; None: SQLite (not applicable)
    rows_expected: int  # 200s in this interval (each wrote its rows)
    rows_found: int  # rows the table gained in this interval
    unacknowledged: int  # requests whose answer never came: the server may have written their rows
    processes: tuple[SoakProcess, ...] = ()

    @property
    def failed(self) -> int:
        return self.timeout + self.connect + self.http_4xx + self.http_5xx


@dataclass(frozen=True)
class Soak:
    """A soak: open-loop load at `fraction` of the capacity the cell measured, for `duration_s`."""

    capacity_rps: float  # closed-loop throughput the cell measured just before
    fraction: float
    rate_rps: float  # offered: fraction x capacity (Poisson arrivals)
    duration_s: float
    interval_s: float
    warmup_intervals: int  # left out of every fit
    intervals: tuple[SoakInterval, ...]
    rss: Growth | None  # None: too few intervals to fit
    fds: Growth | None
    db_connections: Growth | None  # None for SQLite: not applicable
    # The capacity probe's rows: its 200s, the rows the table gained meanwhile, its unanswered requests.
    probe_rows_expected: int = 0
    probe_rows_found: int = 0
    probe_unacknowledged: int = 0
    # The deployment's progress over the soak (as under load): its longest stretch without CPU
    # progress, the slice after which that is blocked, and one worker's longest stall.
    longest_idle_s: float | None = None
    blocked_after_s: float | None = None
    longest_worker_stall_s: float | None = None

    @property
    def requests(self) -> int:
        return self.intervals[-1].requests if self.intervals else 0

    @property
    def rows_expected(self) -> int:
        """One row per 200, the probe's included."""
        return self.probe_rows_expected + sum(i.rows_expected for i in self.intervals)

    @property
    def rows_found(self) -> int:
        return self.probe_rows_found + sum(i.rows_found for i in self.intervals)

    @property
    def unacknowledged(self) -> int:
        return self.probe_unacknowledged + sum(i.unacknowledged for i in self.intervals)

    @property
    def failed(self) -> int:
        return sum(i.failed for i in self.intervals)

    def failures(self, kind: str) -> int:
        """Failed requests of one kind (timeout, connect, http_4xx, http_5xx) over every interval."""
        return sum(getattr(i, kind) for i in self.intervals)


def fit_soak(intervals: Sequence[SoakInterval]) -> tuple[Growth | None, Growth | None, Growth | None]:
    """(RSS in %, descriptors, connections) growth, fitted after the warm-up intervals."""
    kept = list(intervals)[warmup_intervals(len(intervals)):]
    ts, reqs = [i.t_s for i in kept], [float(i.requests) for i in kept]
    rss = growth("total_rss_mb", ts, reqs, [i.total_rss_mb for i in kept], pct=True)
    fds = growth("fds", ts, reqs, [float(i.fds) for i in kept], pct=False)
    conns = [i.db_connections for i in kept]
    db = None if any(c is None for c in conns) else growth("db_connections", ts, reqs,
                                                           [float(c or 0) for c in conns], pct=False)
    return rss, fds, db


def leaks(soak: Soak) -> list[str]:
    """Each resource whose growth's lower 95% bound is beyond its bound, in words with the fit (the
    verdict rule ``verdicts.judge_soak`` reads them)."""
    found = []
    for g, bound, unit in ((soak.rss, RSS_BOUND_PCT_PER_10MIN, "%"), (soak.fds, FDS_ALLOWANCE_PER_10MIN, " fds"),
                           (soak.db_connections, CONNS_ALLOWANCE_PER_10MIN, " connections")):
        if g is not None and g.per_10min_low > bound:
            found.append(f"{g.resource} grew {g.per_10min:+,.1f}{unit} per 10 min (95% interval "
                         f"{g.per_10min_low:+,.1f} to {g.per_10min_high:+,.1f}; {g.per_10k_requests:+,.1f}{unit} per "
                         f"10,000 requests) from {g.start:g} over {g.points} intervals after the warm-up, "
                         f"beyond the bound of {bound:g}{unit} per 10 min")
    return found
