"""The soak scenario: load for a set time, watching what grows with time and with requests.

Runs in the process of ``forkwise cell``, after verification passed. First a short closed-loop
probe measures the cell's own capacity (``CAPACITY_CONCURRENCY`` clients, the built-in driver);
then open-loop load (Poisson arrivals, ``forkwise.matrix.run.open_loop``) at the plan's
``soak_fraction`` of it for ``soak_duration_s``, in intervals. At each interval's end every process
of the deployment is sampled: RSS, PSS, USS, open file descriptors, and the app's connections to
its database (PostgreSQL; SQLite has none: not applicable), with the interval's 200s, failures,
p50/p99 and the rows the table gained. The growth is fitted in ``forkwise.matrix.records.soak``
and judged by ``verdicts.judge_soak``.

Each interval is one run of the open-loop driver, which waits for its requests in flight before it
returns: between intervals the load pauses for as long as a driver takes to start (about 0.3 s)
and the sampling (smaps of every process). The pause is in no interval's latency.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from forkwise.matrix.records.soak import Soak, SoakInterval, fit_soak, warmup_intervals
from forkwise.matrix.run import resources
from forkwise.matrix.run.load import run_load
from forkwise.matrix.run.open_loop import run_open_loop
from forkwise.matrix.run.running import RunningCell
from forkwise.matrix.run.verification import Verification
from forkwise.webapp.db import Database

CAPACITY_CONCURRENCY = 8  # clients of the capacity probe (the reliability scenarios' concurrency)
CAPACITY_PROBE_S = 4.0  # seconds the probe measures, at most (a tenth of a shorter soak)
MAX_INTERVAL_S = 5.0  # the sampling interval: 5 s, or shorter so that a short soak has 12 intervals
MIN_INTERVALS = 12


def interval_s(duration_s: float) -> float:
    """Seconds per interval: 5, or a twelfth of a soak shorter than a minute."""
    return min(MAX_INTERVAL_S, duration_s / MIN_INTERVALS)


@contextlib.contextmanager
def connection_counter(run: RunningCell) -> Iterator[Any]:
    """A callable counting the app's connections to its PostgreSQL server now; None for SQLite."""
    server = getattr(run.database, "server", None)
    if server is None:
        yield None
        return
    from forkwise.pg_watch import app_connections

    conn = server.connect_admin()
    try:
        yield lambda: int(app_connections(conn))
    finally:
        conn.close()


def measure_capacity(run: RunningCell, url: str, bodies: list[bytes], duration_s: float) -> tuple[float, int, int]:
    """Closed-loop throughput the cell carries now: (rps, 200s including the warm-up, unanswered)."""
    probe_s = min(CAPACITY_PROBE_S, max(1.0, duration_s / 10))
    result = run_load(url, bodies, concurrency=CAPACITY_CONCURRENCY, warmup_s=0.5, duration_s=probe_s,
                      intervals=2, timeout_s=run.patience_s, driver="builtin", sample_every=0)
    return result.ok / probe_s, result.total_ok_including_warmup, result.unacknowledged


def run_soak(run: RunningCell, v: Verification, fraction: float, duration_s: float) -> Soak:
    """The capacity probe, then `duration_s` of open-loop load at `fraction` of it, sampled per interval."""
    d, master = run.launched.deployment, run.launched.group.pid
    url = f"http://{d.host}:{d.port}/predict"
    bodies = [json.dumps(v.payload([i])).encode() for i in range(len(v.inputs))]  # one row each
    db = Database(d.settings.database_url)
    run.enter("measuring the capacity for the soak")
    rows_before = db.count()
    capacity, probe_ok, probe_unacked = measure_capacity(run, url, bodies, duration_s)
    probe_found = db.count() - rows_before
    rate = round(max(1.0, fraction * capacity), 1)
    step = interval_s(duration_s)
    run.enter(f"soaking at {rate:g} req/s for {duration_s:g} s")
    intervals: list[SoakInterval] = []
    with connection_counter(run) as connections:
        started, done = time.monotonic(), 0
        for i in range(max(MIN_INTERVALS, round(duration_s / step))):
            rows_before = db.count()
            r = run_open_loop(url, bodies, rate, 0.0, step, run.patience_s, seed=i)
            done += r.total_ok_including_warmup
            processes = resources.soak_sample(master)
            lat = r.latency_ms
            intervals.append(SoakInterval(
                t_s=round(time.monotonic() - started, 2), requests=done, ok=r.ok, timeout=r.timeout,
                connect=r.connect, http_4xx=r.http_4xx, http_5xx=r.http_5xx,
                p50_ms=round(lat["p50"], 2) if r.ok else None,
                p99_ms=round(lat["p99"], 2) if r.ok else None,
                total_rss_mb=round(sum(p.rss_mb for p in processes), 1),
                total_pss_mb=round(sum(p.pss_mb for p in processes), 1),
                total_uss_mb=round(sum(p.uss_mb for p in processes), 1), fds=sum(p.fds for p in processes),
                db_connections=connections() if connections else None,
                rows_expected=r.total_ok_including_warmup, rows_found=db.count() - rows_before,
                unacknowledged=r.unacknowledged, processes=processes))
        ended = time.monotonic()
    db.dispose()
    rss, fds, conns = fit_soak(intervals)
    watch = run.progress
    idle_s = watch.longest_idle_s(started, ended) if watch is not None else None
    stall_s = watch.longest_worker_stall_s(started, ended) if watch is not None else None
    return Soak(capacity_rps=round(capacity, 1), fraction=fraction, rate_rps=rate, duration_s=duration_s,
                interval_s=round(step, 2), warmup_intervals=warmup_intervals(len(intervals)),
                intervals=tuple(intervals), rss=rss, fds=fds, db_connections=conns,
                probe_rows_expected=probe_ok, probe_rows_found=probe_found, probe_unacknowledged=probe_unacked,
                longest_idle_s=None if idle_s is None else round(idle_s, 2),
                blocked_after_s=run.cell.request_timeout_s if idle_s is not None else None,
                longest_worker_stall_s=None if stall_s is None else round(stall_s, 2))
