"""Open-loop HTTP load: requests at a fixed rate, Poisson arrivals, latency from each intended start.

Closed-loop load (``forkwise.matrix.run.load``) sends a client's next request only once its answer
came back, so a server that stalls slows the load down with it and the stall hides from the
latency (coordinated omission). Here every arrival time is drawn before the run (exponential gaps
at the rate asked for), and a request's latency counts from the moment it was meant to start:
time spent waiting for a free connection, in the server's backlog or for the driver itself is
all in it. Rates, not concurrencies, are what a service is asked to carry, so the highest rate
whose p99 stays within a budget (``find_max_rate``) is the number to rank deployments by.

- ``run_open_loop`` (caller's process): runs ``python -m forkwise.matrix.run.open_loop PLAN RESULT`` in
  its own process group with a deadline (``driver.run_driver``) and returns an ``OpenLoopResult``.
- The child: one asyncio loop; a pool of keep-alive connections, opened as needed up to
  ``max_connections`` (an arrival that finds none free waits for one, its clock running).
- ``find_max_rate``: fixed rates, or a bisection below the cell's closed-loop peak.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from forkwise.matrix.records.types import ErrorCounts, Latency, OpenLoop, RateLevel
from forkwise.matrix.run.child import Deadline
from forkwise.matrix.run.driver import (
    LoadError,
    driver_main,
    driver_plan,
    loopback_target,
    percentiles_ms,
    post_requests,
    read_response,
    run_driver,
)
from forkwise.matrix.run.stability import wait_idle

QUANTILE = 0.99  # the latency quantile a budget is about
MAX_CONNECTIONS = 256  # the most connections the driver opens; later arrivals queue for one
# A rate is carried only if the driver itself kept to it: at p99 it started requests at most this
# share of the budget late (else the latency measured the load generator, not the server).
MAX_DRIVER_LAG_SHARE = 0.1


@dataclass(frozen=True)
class OpenLoopResult:
    """One offered rate, as the driver saw it. Counts cover the measured window (after warm-up)."""

    rate_rps: float  # offered
    duration_s: float
    sent: int  # requests due in the window
    ok: int  # answered 200
    http_4xx: int
    http_5xx: int
    timeout: int
    connect: int
    latency_ms: dict[str, float]  # of the 200s, from each request's intended start
    # p99 over every request due in the window, a failed one counting as over any budget; None
    # when more than 1% failed.
    p99_all_ms: float | None
    lag_p99_ms: float  # how late the driver sent, against the schedule, at p99
    max_in_flight: int
    driver_cpu_s: float
    total_ok_including_warmup: int
    unacknowledged: int  # requests written whose answer never came (timeouts, resets, cut off)

    @property
    def failed(self) -> int:
        return self.http_4xx + self.http_5xx + self.timeout + self.connect

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def within(self, p99_budget_ms: float) -> bool:
        """Every request's p99 (failures over budget) within the budget, with the driver on schedule."""
        return (self.p99_all_ms is not None and self.p99_all_ms <= p99_budget_ms
                and self.lag_p99_ms <= MAX_DRIVER_LAG_SHARE * p99_budget_ms)


def arrivals(rate_rps: float, seconds: float, seed: int) -> list[float]:
    """Poisson arrival times in [0, seconds): exponential gaps of mean 1/rate."""
    rng, at = random.Random(seed), 0.0
    times: list[float] = []
    while True:
        at += rng.expovariate(rate_rps)
        if at >= seconds:
            return times
        times.append(at)


def p99_with_failures(ok_latencies_s: list[float], failed: int) -> float | None:
    """The QUANTILE of all requests, a failure counting as infinitely late (None: beyond the 200s)."""
    total = len(ok_latencies_s) + failed
    if total == 0:
        return None
    rank = math.ceil(QUANTILE * total)
    if rank > len(ok_latencies_s):
        return None
    return sorted(ok_latencies_s)[rank - 1] * 1000.0


# --- the child ------------------------------------------------------------------------------------


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]  # a keep-alive connection's two ends


class _Pool:
    """Child process: idle keep-alive connections, opened on demand up to a limit."""

    def __init__(self, host: str, port: int, limit: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.idle: list[Connection] = []
        self.free = asyncio.Semaphore(limit)
        self.reuse = True  # turned off once the server is seen to close after each answer (uWSGI)

    async def get(self) -> tuple[Connection, bool]:
        await self.free.acquire()
        if self.idle:
            return self.idle.pop(), True
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.open_connection(self.host, self.port), False
        except BaseException:
            self.free.release()
            raise

    def put(self, conn: Connection, keep: bool) -> None:
        if keep and self.reuse:
            self.idle.append(conn)
        else:
            conn[1].close()
        self.free.release()


class _OpenRun:
    """Child process: the schedule, and what each request saw."""

    def __init__(self, cfg: dict):
        self.reqs = post_requests(cfg)
        self.warmup_s, self.duration_s, self.timeout_s = cfg["warmup_s"], cfg["duration_s"], cfg["timeout_s"]
        self.pool = _Pool(cfg["host"], cfg["port"], cfg["max_connections"], cfg["timeout_s"])
        self.lat: list[float] = []
        self.lag: list[float] = []
        self.errors = {"http_4xx": 0, "http_5xx": 0, "timeout": 0, "connect": 0}
        self.total_ok = self.unacked = self.in_flight = self.max_in_flight = 0

    def counted(self, due: float) -> bool:
        return self.warmup_s <= due < self.warmup_s + self.duration_s

    async def one(self, i: int, due: float, start: float) -> None:
        if self.counted(due):
            self.lag.append(perf_counter() - start - due)  # the driver's own lateness, not the server's
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            kind = await self._send(self.reqs[i % len(self.reqs)], due, start)
        finally:
            self.in_flight -= 1
        if kind != "ok" and self.counted(due):
            self.errors[kind] += 1

    async def _send(self, req: bytes, due: float, start: float) -> str:
        """One request, retried once on a reused connection the server had closed; returns its kind."""
        for _ in (1, 2):
            try:
                async with asyncio.timeout(self.timeout_s - (perf_counter() - start - due)):
                    (reader, writer), reused = await self.pool.get()
                    try:
                        writer.write(req)
                        status, _, keep = await read_response(reader)
                    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                        self.pool.put((reader, writer), keep=False)
                        nothing = not getattr(exc, "partial", b"")
                        if reused and nothing:
                            self.pool.reuse = False  # the server closes after each answer: never reuse
                            continue
                        self.unacked += 1
                        return "connect"
                    except BaseException:
                        writer.transport.abort()
                        self.pool.free.release()
                        raise
                    self.pool.put((reader, writer), keep)
            except TimeoutError:
                self.unacked += 1
                return "timeout"
            except (OSError, ValueError):
                return "connect"
            if 200 <= status < 300:
                self.total_ok += 1
                if self.counted(due):
                    self.lat.append(perf_counter() - start - due)
                return "ok"
            return "http_5xx" if status >= 500 else "http_4xx"
        return "connect"

    def summary(self) -> dict:
        failed = sum(self.errors.values())
        self.lat.sort()
        self.lag.sort()
        lag_p99 = self.lag[max(0, math.ceil(QUANTILE * len(self.lag)) - 1)] * 1000.0 if self.lag else 0.0
        return {"ok": len(self.lat), **self.errors, "latency_ms": percentiles_ms(self.lat),
                "p99_all_ms": p99_with_failures(self.lat, failed), "lag_p99_ms": lag_p99,
                "max_in_flight": self.max_in_flight, "total_ok": self.total_ok, "unacked": self.unacked}


async def _child_main(cfg: dict) -> dict:
    """Child process: send on schedule, then wait for every request still in flight (each ends
    within timeout_s of when it was due)."""
    run = _OpenRun(cfg)
    schedule = arrivals(cfg["rate_rps"], cfg["warmup_s"] + cfg["duration_s"], cfg["seed"])
    tasks, start = [], perf_counter()
    for i, due in enumerate(schedule):
        delay = start + due - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run.one(i, due, start)))
    await asyncio.gather(*tasks)
    sent = sum(1 for due in schedule if run.counted(due))
    return {**run.summary(), "sent": sent}


# --- the caller's side -------------------------------------------------------------------------


def run_open_loop(url: str, bodies: list[bytes], rate_rps: float, warmup_s: float, duration_s: float,
                  timeout_s: float, seed: int = 0, max_connections: int = MAX_CONNECTIONS) -> OpenLoopResult:
    """Offer `rate_rps` (Poisson) to a loopback `url` for warm-up + duration, from a child process."""
    target = loopback_target(url)
    if not bodies or rate_rps <= 0 or duration_s <= 0 or warmup_s < 0 or timeout_s <= 0 or max_connections < 1:
        raise LoadError(f"need bodies, rate_rps, duration_s, timeout_s > 0, warmup_s >= 0, max_connections >= 1; "
                        f"got {rate_rps=} {duration_s=} {warmup_s=} {timeout_s=} {max_connections=}")
    plan = driver_plan(target, bodies, rate_rps=rate_rps, warmup_s=warmup_s, duration_s=duration_s,
                       timeout_s=timeout_s, seed=seed, max_connections=max_connections)
    deadline = Deadline.after(warmup_s + duration_s + timeout_s + 15)
    run = run_driver("forkwise.matrix.run.open_loop", plan, deadline, what="open-loop driver")
    raw = run.result
    return OpenLoopResult(rate_rps, duration_s, raw["sent"], raw["ok"], raw["http_4xx"], raw["http_5xx"],
                          raw["timeout"], raw["connect"], raw["latency_ms"], raw["p99_all_ms"], raw["lag_p99_ms"],
                          raw["max_in_flight"], run.exit.cpu_s, raw["total_ok"], raw["unacked"])


def find_max_rate(measure: Callable[[float], OpenLoopResult], p99_budget_ms: float, rates: tuple[float, ...] = (),
                  peak_rps: float | None = None, steps: int = 5, start_rps: float = 50.0) -> list[OpenLoopResult]:
    """The rates tried, in order, to find the highest rate within the budget (see ``best_rate``).

    `rates`: those, ascending, until the first that misses. Else a search of `steps` runs: a
    bisection of (0, 1.2 x peak_rps] when the cell's closed-loop peak is known, otherwise doubling
    from `start_rps` until a rate misses, then bisection."""
    tried: list[OpenLoopResult] = []
    if rates:
        for rate in sorted(rates):
            tried.append(measure(rate))
            if not tried[-1].within(p99_budget_ms):
                break
        return tried
    low, high = 0.0, 1.2 * peak_rps if peak_rps else None
    for _ in range(steps):
        rate = (low + high) / 2 if high is not None else (2 * low if low else start_rps)
        tried.append(measure(round(rate, 1)))
        if tried[-1].within(p99_budget_ms):
            low = rate
        else:
            high = rate
    return tried


def best_rate(tried: list[OpenLoopResult], p99_budget_ms: float) -> float | None:
    """The highest offered rate within the budget; None when none was."""
    met = [r.rate_rps for r in tried if r.within(p99_budget_ms)]
    return max(met) if met else None


@dataclass(frozen=True)
class OpenLoopPlan:
    """A cell's open-loop phase: fixed rates, or a search of `steps` rates (see find_max_rate).
    Made from the cell's plan (forkwise.matrix.run.plan.CellPlan.open_loop_plan), where its defaults are."""

    p99_budget_ms: float
    rates: tuple[float, ...]  # empty: a search
    steps: int
    duration_s: float  # measured seconds per rate
    warmup_s: float = 0.5  # seconds of each rate before its measured window


def measure_open_loop(url: str, bodies: list[bytes], plan: OpenLoopPlan, timeout_s: float, peak_rps: float | None,
                      rows: Callable[[], int], cpu_seconds: Callable[[], float]) -> OpenLoop:
    """Run the plan against a deployment: each rate once the deployment is idle again (what the
    rate before left queued is not measured), with the rows the database gained and the CPU its
    processes used."""
    levels: list[RateLevel] = []
    drain_s = plan.warmup_s + plan.duration_s

    def measure(rate: float) -> OpenLoopResult:
        wait_idle(cpu_seconds, drain_s)
        rows_before, cpu_before = rows(), cpu_seconds()
        result = run_open_loop(url, bodies, rate, plan.warmup_s, plan.duration_s, timeout_s, seed=len(levels))
        levels.append(rate_level(result, plan.p99_budget_ms, rows() - rows_before, cpu_seconds() - cpu_before))
        return result

    tried = find_max_rate(measure, plan.p99_budget_ms, plan.rates, peak_rps, plan.steps)
    return OpenLoop(plan.p99_budget_ms, tuple(levels), best_rate(tried, plan.p99_budget_ms))


def rate_level(r: OpenLoopResult, p99_budget_ms: float, rows_found: int, server_cpu_s: float) -> RateLevel:
    lat = r.latency_ms
    return RateLevel(
        rate_rps=r.rate_rps, duration_s=r.duration_s, sent=r.sent, requests=r.ok, rps=round(r.achieved_rps, 1),
        latency=Latency(**{f"{k}_ms": round(lat[k], 3) for k in ("p50", "p90", "p99", "max", "mean")}),
        p99_all_ms=None if r.p99_all_ms is None else round(r.p99_all_ms, 3),
        errors=ErrorCounts(timeout=r.timeout, connect=r.connect, http_4xx=r.http_4xx, http_5xx=r.http_5xx),
        lag_p99_ms=round(r.lag_p99_ms, 3), max_in_flight=r.max_in_flight, within_budget=r.within(p99_budget_ms),
        rows_expected=r.total_ok_including_warmup, rows_found=rows_found, unacknowledged=r.unacknowledged,
        driver_cpu_s=round(r.driver_cpu_s, 2), server_cpu_s=round(server_cpu_s, 2),
    )


if __name__ == "__main__":  # the driver's child: python -m forkwise.matrix.run.open_loop PLAN RESULT
    sys.exit(driver_main(sys.argv[1:], _child_main))
