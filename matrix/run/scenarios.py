"""Reliability scenarios: what a cell does when things go wrong, under load.

Runs in the process of ``forkwise cell``, after verification passed. Each scenario
loads the deployment with the built-in driver (it keeps every answer, so every 200's
rows can be checked by id) and, part-way through, disrupts it: kills a worker, kills
the model server, reloads the server, restarts the database server, or just runs with
worker recycling, heavy database contention or a bad-input campaign. The invariants hold in every scenario:
every 200's rows exist with the same outputs, no row exists for a request nobody
answered, and a disrupted deployment recovers. A breach is a failing verdict.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from forkwise.config import DEFAULT_DATABASE
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.roles import MODEL_SERVER
from forkwise.matrix.records.soak import SOAK
from forkwise.matrix.records.types import BAD_INPUT, Disruption, ErrorCounts
from forkwise.matrix.run import resources
from forkwise.matrix.run.http import parse_json, post_json, request, send_oversized
from forkwise.matrix.run.readiness import ReadinessWatch, window_truth
from forkwise.matrix.run.running import RunningCell
from forkwise.matrix.run.verification import Verification

if TYPE_CHECKING:
    from forkwise.strategies.base import Strategy


INTERVAL_S = 0.25  # throughput is sampled this often, to see the dip and the recovery
WARMUP_S = 0.5  # the scenario's load before its measured window
RECOVERED_AT = 0.8  # recovered: an interval back at 80% of the throughput before the event
# A disrupted deployment has this many of its own cold starts (measured by the same cell) to
# recover: a replacement worker or model server loads the model once, a graceful reload twice
# at worst (old and new workers overlap). On a slower host the cold start and so the allowance
# grow together, so the verdict does not follow the host's speed.
RECOVERY_COLD_STARTS = 3.0
SEEN_BACK_S = 1.0  # plus this long, to see the rate back in the samples
# Recovery is judged on each interval's rate as if the rest of the machine had left the deployment
# every core (``host_adjusted``): a neighbour that starts computing after the event lowers the rate
# but not the verdict. Below this share the interval says too little to scale it up further.
MIN_HOST_SHARE = 0.25


def recovery_allowance_s(cold_start_s: float) -> float:
    """Seconds a disrupted deployment may take to answer again at its former rate."""
    return RECOVERY_COLD_STARTS * cold_start_s + SEEN_BACK_S


def window_s(duration_s: float, allowance_s: float) -> tuple[float, float]:
    """(when the event fires, how long the measured window lasts): the event a third of the way
    into the configured window, and the window long enough to hold the allowance after it."""
    event_at = duration_s / 3
    return event_at, max(duration_s, event_at + allowance_s)




@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    concurrency: int = 8
    instances: int = 1  # per request
    max_requests: int = 0  # deployment knob: recycle workers after this many requests
    event: Callable | None = None  # action(run) -> note, run part-way through the load
    disrupts_workers: bool = False  # worker deaths are the scenario, not a crash
    applies: Callable[[type[Strategy]], bool] = lambda strategy_cls: True
    needs_database_server: bool = False  # a database server to disrupt (not a SQLite file)

    def fits(self, strategy_cls: type[Strategy], database: str) -> bool:
        """Whether the scenario can run for this strategy on this database."""
        return self.applies(strategy_cls) and not (self.needs_database_server and database == DEFAULT_DATABASE)


def _kill_worker(run: RunningCell) -> str:
    pids = sorted(resources.worker_pids(run.launch.group.pid))
    if not pids:
        return "no worker to kill"
    os.kill(pids[0], signal.SIGKILL)
    return f"SIGKILL worker {pids[0]}"


def _model_servers(master: int) -> list[psutil.Process]:
    return [p for p in resources.deployment_processes(master) if resources.role_of(p, master) == MODEL_SERVER]


def _kill_model_server(run: RunningCell) -> str:
    found = _model_servers(run.launch.group.pid)
    if not found:
        return "no model server to kill"
    found[0].kill()
    return f"SIGKILL model server {found[0].pid}"


def _restart_database(run: RunningCell) -> str:
    # Every session is cut and the server is down for a moment: the app must answer 503, then reconnect.
    took = run.database.server.restart()
    return f"restarted the PostgreSQL server (pg_ctl restart -m fast, {took:.2f} s)"


def _reload(run: RunningCell) -> str:
    # Gunicorn: HUP starts new workers and retires the old gracefully. uWSGI: HUP is its graceful reload.
    os.kill(run.launch.group.pid, signal.SIGHUP)
    return f"SIGHUP master {run.launch.group.pid}"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(STEADY, "no disruption: verification and load only"),
        Scenario("kill-worker", "SIGKILL one worker in the middle of load", event=_kill_worker, disrupts_workers=True),
        Scenario("kill-model-server", "SIGKILL the model server in the middle of load", event=_kill_model_server,
                 applies=lambda cls: cls.has_model_server),
        Scenario("reload", "graceful reload (SIGHUP) of the server in the middle of load", event=_reload,
                 disrupts_workers=True),
        Scenario("recycle", "workers recycled every ~1500 requests (max-requests, staggered) under load",
                 max_requests=1500,
                 disrupts_workers=True),
        Scenario("db-contention", "32 concurrent writers of 16 rows each on the one database", concurrency=32,
                 instances=16),
        Scenario("restart-database", "the PostgreSQL server restarted in the middle of load (503s meanwhile, "
                 "then reconnected)", event=_restart_database, needs_database_server=True),
        Scenario(BAD_INPUT, "a fixed corpus and generated malformed payloads, then correct answers"),
        Scenario(SOAK, "open-loop load at a share of the cell's measured capacity for a set time, every process's "
                 "memory, descriptors and database connections sampled: what grows (run.soak)"),
    )
}


def get(name: str, strategy_cls: type[Strategy], database: str = DEFAULT_DATABASE) -> Scenario:
    """The scenario by name; the error lists the valid ones, or says why it does not apply."""
    from forkwise.errors import ConfigError, UnknownNameError

    if name not in SCENARIOS:
        raise UnknownNameError("scenario", name, SCENARIOS)
    scenario = SCENARIOS[name]
    if not scenario.applies(strategy_cls):
        raise ConfigError(f"scenario {name!r} does not apply to strategy {strategy_cls.name!r}: {scenario.summary}")
    if not scenario.fits(strategy_cls, database):
        raise ConfigError(f"scenario {name!r} needs a database server: run it with --database postgresql")
    return scenario


def longest_stall_s(samples: tuple[float, ...]) -> tuple[float, float]:
    """(the longest stretch without a single 200, the stretch still running at the window's end)."""
    longest = run = 0
    for rate in samples:
        run = run + 1 if rate == 0 else 0
        longest = max(longest, run)
    return longest * INTERVAL_S, run * INTERVAL_S


def host_adjusted(samples: tuple[float, ...], shares: tuple[float, ...]) -> tuple[float, ...]:
    """Each interval's rate divided by the share of the machine's cores the rest of the machine left
    (``ProgressWatch.host_shares``; none measured: the rates as they are)."""
    if len(shares) != len(samples):
        return samples
    return tuple(rate / max(share, MIN_HOST_SHARE) for rate, share in zip(samples, shares, strict=True))


def _recovery(samples: tuple[float, ...], event_at: float | None,
              allowance_s: float) -> tuple[float | None, bool]:
    """Seconds from the event to the first interval back at 80% of the rate before it, within
    `allowance_s` of the event.

    Without a single event (recycling, contention) a stall is measured, not a failure in itself:
    the deployment must answer again within `allowance_s` of every stall (a stall still running
    at the window's end is judged by `settle_tail` before this).
    """
    if event_at is None:
        longest, _ = longest_stall_s(samples)
        return None, longest <= allowance_s and any(s > 0 for s in samples)
    k = int(event_at / INTERVAL_S)
    before = [s for s in samples[:k] if s > 0]
    if not before:
        return None, False
    target = RECOVERED_AT * float(np.median(before))
    for i in range(k + 1, len(samples)):
        if samples[i] >= target:
            recovery = max(0.0, (i + 1) * INTERVAL_S - event_at)
            return round(recovery, 2), recovery <= allowance_s
    return None, False


def run_disruption(run: RunningCell, v: Verification, scenario: Scenario, duration_s: float,
                   timeout_s: float) -> Disruption:
    """Load with the built-in driver; fire the scenario's event a third of the way in.

    The window is stretched to hold the recovery allowance after the event (from the cell's own
    cold start), so a replacement that loads the model as fast as the first worker did is seen.
    """
    rows_per_body = [[(i + j) % len(v.inputs) for j in range(scenario.instances)] for i in range(len(v.inputs))]
    allowance = recovery_allowance_s(run.timings.get("cold_start_s", 0.0))
    event_at, window = window_s(duration_s, allowance)
    started = time.monotonic()
    d = run.launched.deployment
    with ReadinessWatch(d.host, d.port, run.cell.request_timeout_s) as probe:  # /readyz beside the load
        result, note = _load_with_event(run, v, scenario, rows_per_body, event_at, window, timeout_s)
    window_started = started + WARMUP_S  # the driver's measured intervals start after its warm-up
    ended = time.monotonic()
    idle_s = run.progress.longest_idle_s(started, ended) if run.progress is not None else None
    worker_stall_s = run.progress.longest_worker_stall_s(started, ended) if run.progress is not None else None
    # Every answer was kept: check each one, and remember its rows for the database check.
    wrong, workers = 0, set()
    for raw, index in zip(result.sampled_bodies, result.sampled_requests, strict=False):
        correct, worker = acknowledge(v, parse_json(raw), rows_per_body[index])
        wrong += not correct
        workers.add(worker)
    samples = tuple(round(x, 1) for x in result.rps_samples)
    stall, tail = longest_stall_s(samples)
    # Without an event, a stall still running at the window's end is followed until it ends.
    tail_probe = TailProbe(run, v, timeout_s).settle(tail, allowance) if tail and not scenario.event else None
    shares = (run.progress.host_shares(window_started, INTERVAL_S, len(samples)) if run.progress is not None
              else ())
    recovery_s, recovered = _recovery(host_adjusted(samples, shares), event_at if scenario.event else None, allowance)
    if tail_probe is not None:
        stall = max(stall, tail_probe.stall_s)
        wrong += tail_probe.wrong
        workers.update(tail_probe.workers)
        recovered = tail_probe.answered and stall <= allowance
    return Disruption(
        event=note, at_s=round(event_at, 2) if scenario.event else None,
        ok=result.total_ok_including_warmup, answers_wrong=wrong,
        failed=ErrorCounts(timeout=result.timeout, connect=result.connect, http_4xx=result.http_4xx,
                           http_5xx=result.http_5xx, wrong=wrong),
        http_503=result.http_503, unacknowledged=result.unacknowledged + (tail_probe.unanswered if tail_probe else 0),
        recovery_s=recovery_s, recovered=recovered, rps_samples=samples, interval_s=INTERVAL_S, host_shares=shares,
        readiness=window_truth(probe.polls, window_started, INTERVAL_S, samples),
        workers_answering=tuple(sorted(workers)), longest_stall_s=round(stall, 2),
        recovery_allowance_s=round(allowance, 2), longest_idle_s=round(idle_s, 2) if idle_s is not None else None,
        blocked_after_s=run.cell.request_timeout_s if idle_s is not None else None,
        longest_worker_stall_s=round(worker_stall_s, 2) if worker_stall_s is not None else None,
    )


def _load_with_event(run: RunningCell, v: Verification, scenario: Scenario, rows_per_body: list[list[int]],
                     event_at: float, window: float, timeout_s: float) -> tuple[Any, str]:
    """The window's load, with the scenario's event fired `event_at` into it: (the load's result,
    what the event did)."""
    from forkwise.matrix.run.load import run_load

    d = run.launch.deployment
    bodies = [json.dumps(v.payload(rows)).encode() for rows in rows_per_body]
    fired: dict[str, object] = {}

    def fire(event: Callable) -> None:
        time.sleep(WARMUP_S + event_at)
        fired["note"] = event(run)

    timer = threading.Thread(target=fire, args=(scenario.event,), daemon=True) if scenario.event else None
    if timer:
        timer.start()
    result = run_load(f"http://{d.host}:{d.port}/predict", bodies, concurrency=scenario.concurrency,
                      warmup_s=WARMUP_S, duration_s=window, intervals=max(3, round(window / INTERVAL_S)),
                      timeout_s=timeout_s, driver="builtin", sample_every=1)
    if timer:
        timer.join()
    return result, str(fired.get("note", ""))


def acknowledge(v: Verification, body: Any, rows: list[int]) -> tuple[bool, int]:
    """Check one 200 answer against the reference and remember its rows: (correct, worker pid)."""
    correct, got, ids, worker, _ = v.compare(body, rows)
    for row_id, out in zip(ids, got if got is not None else [], strict=False):
        v.acknowledged[row_id] = [float(x) for x in out]
    return correct, worker


@dataclass
class TailProbe:
    """A stall still running when the window ended (workers recycling at its very end): one
    request at a time until the deployment answers, for what is left of the allowance."""

    run: RunningCell
    v: Verification
    timeout_s: float
    answered: bool = False
    stall_s: float = 0.0
    wrong: int = 0
    unanswered: int = 0  # requests given up on: the server may still write their rows
    workers: tuple[int, ...] = ()

    def settle(self, stalled_s: float, allowance_s: float) -> TailProbe:
        assert self.run.launch is not None  # probed only while the cell's deployment runs
        d = self.run.launch.deployment
        start = time.monotonic()
        while not self.answered and stalled_s + time.monotonic() - start <= allowance_s:
            left = allowance_s - (stalled_s + time.monotonic() - start)
            reply = post_json(d.host, d.port, "/predict", self.v.payload([0]), max(0.5, min(self.timeout_s, left)))
            if reply.kind == "ok":
                correct, worker = acknowledge(self.v, reply.body, [0])
                self.answered, self.wrong, self.workers = True, int(not correct), (worker,)
            elif reply.kind == "timeout":
                self.unanswered += 1
            else:
                time.sleep(INTERVAL_S)
        self.stall_s = stalled_s + time.monotonic() - start
        return self


# --- the bad-input campaign -----------------------------------------------------------------

FIXED_CORPUS: list[tuple[str, str, bytes, str]] = [
    # (method, content type, body, what)
    ("POST", "application/json", b"{oops", "invalid JSON"),
    ("POST", "application/json", b"", "empty body"),
    ("POST", "application/json", b"\xff\xfe\x00", "not UTF-8"),
    ("POST", "application/json", b"null", "null"),
    ("POST", "application/json", b'{"instances": []}', "no instances"),
    ("POST", "application/json", b'{"instances": {"a": 1}}', "instances not a list"),
    ("POST", "application/json", b'{"instances": [[1, 2, 3]]}', "wrong width"),
    ("POST", "application/json", b'{"instances": [["a"]]}', "strings"),
    ("POST", "application/json", b'{"instances": [[NaN]]}', "NaN"),
    ("POST", "application/json", b'{"instances": [[1e999]]}', "overflow"),
    ("POST", "application/json", b"[" * 20000 + b"]" * 20000, "deep nesting"),
    ("POST", "application/json", b'{"instances": [' + b"[0]," * 1_200_000 + b"[0]]}", "oversized body"),
    ("POST", "text/plain", b'{"instances": [[0]]}', "wrong content type"),
    ("POST", "application/x-www-form-urlencoded", b"instances=1", "a form"),
    ("GET", "", b"", "wrong method"),
    ("PUT", "application/json", b"{}", "wrong method"),
    ("DELETE", "", b"", "wrong method"),
]


def generated_corpus(width: int, n: int, seed: int = 7) -> list[tuple[str, str, bytes, str]]:
    """Seeded malformed payloads: wrong types, shapes, huge numbers, NaN, truncation, junk bytes."""
    rng = random.Random(seed)
    junk: list[object] = [None, True, "1.0", [], {}, 1e308 * 10, float("nan"), 10**400, -(10**400), [[1]]]
    out = []
    for i in range(n):
        row: list = [rng.uniform(-3, 3) for _ in range(width)]
        kind = i % 6
        if kind == 0:
            row[rng.randrange(width)] = rng.choice(junk)
            body = json.dumps({"instances": [row]}, allow_nan=True).encode()
        elif kind == 1:
            body = json.dumps({"instances": [row[: rng.randrange(width)]]}).encode()
        elif kind == 2:
            good = json.dumps({"instances": [row]}).encode()
            body = good[: rng.randrange(1, len(good) - 1)]
        elif kind == 3:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif kind == 4:
            body = json.dumps({rng.choice(["instance", "inputs", "x"]): [row]}).encode()
        else:
            body = json.dumps({"instances": [[row] * 2]}).encode()
        out.append(("POST", "application/json", body, f"generated #{i}"))
    return out


def bad_input_campaign(run: RunningCell, v: Verification, n_generated: int = 300) -> tuple[ErrorCounts, list[str]]:
    """Send every payload; count what was not a clean 4xx. 200s are acknowledged like any."""
    d = run.launch.deployment
    width = int(np.prod(v.inputs.shape[1:]))
    counts = {"timeout": 0, "connect": 0, "5xx": 0}
    findings: list[str] = []
    for method, ctype, body, what in FIXED_CORPUS + generated_corpus(width, n_generated):
        headers = {"Content-Type": ctype} if ctype else {}
        if len(body) > d.settings.max_body_bytes:
            reply = send_oversized(d.host, d.port, "/predict", body, ctype, timeout_s=run.patience_s)
        else:
            reply = request(d.host, d.port, method, "/predict", body or None, headers, timeout_s=run.patience_s)
        if reply.kind in counts:
            counts[reply.kind] += 1
            if len(findings) < 10:
                findings.append(f"{what}: {reply.status or reply.kind} {reply.error}".strip())
        elif reply.kind == "ok":  # a mutation that happened to be valid: its rows count as acknowledged
            for row_id, out in zip(reply.body.get("ids", []), reply.body.get("predictions", []), strict=False):
                v.acknowledged[int(row_id)] = np.asarray(out, np.float32).ravel().tolist()
    return ErrorCounts(timeout=counts["timeout"], connect=counts["connect"], http_5xx=counts["5xx"]), findings
