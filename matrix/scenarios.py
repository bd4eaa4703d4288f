"""Reliability scenarios: what a cell does when things go wrong, under load.

Runs in the process of ``forkwise cell``, after verification passed. Each scenario
loads the deployment with the built-in driver (it keeps every answer, so every 200's
rows can be checked by id) and, part-way through, disrupts it: kills a worker, kills
the model server, reloads the server, or just runs with worker recycling, heavy
database contention or a bad-input campaign. The invariants hold in every scenario:
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
from dataclasses import dataclass
from typing import Callable

import numpy as np
import psutil

from forkwise.matrix import resources
from forkwise.matrix.http import parse_json, request, send_oversized
from forkwise.matrix.records import Disruption, ErrorCounts

INTERVAL_S = 0.25  # throughput is sampled this often, to see the dip and the recovery
RECOVERED_AT = 0.8  # recovered: an interval back at 80% of the throughput before the event
STALL_S = 2.0  # eventless scenarios: this long without a single 200 means the deployment stalled


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    concurrency: int = 8
    instances: int = 1  # per request
    max_requests: int = 0  # deployment knob: recycle workers after this many requests
    event: Callable | None = None  # action(run) -> note, run part-way through the load
    disrupts_workers: bool = False  # worker deaths are the scenario, not a crash
    applies: Callable[[type], bool] = lambda strategy_cls: True


def _kill_worker(run) -> str:
    pids = sorted(resources.worker_pids(run.launch.group.pid))
    if not pids:
        return "no worker to kill"
    os.kill(pids[0], signal.SIGKILL)
    return f"SIGKILL worker {pids[0]}"


def _model_servers(master: int) -> list[psutil.Process]:
    return [p for p in resources.deployment_processes(master) if resources.role_of(p, master) == "model-server"]


def _kill_model_server(run) -> str:
    found = _model_servers(run.launch.group.pid)
    if not found:
        return "no model server to kill"
    found[0].kill()
    return f"SIGKILL model server {found[0].pid}"


def _reload(run) -> str:
    # Gunicorn: HUP starts new workers and retires the old gracefully. uWSGI: HUP is its graceful reload.
    os.kill(run.launch.group.pid, signal.SIGHUP)
    return f"SIGHUP master {run.launch.group.pid}"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "no disruption: verification and load only"),
        Scenario("kill-worker", "SIGKILL one worker in the middle of load", event=_kill_worker, disrupts_workers=True),
        Scenario("kill-model-server", "SIGKILL the model server in the middle of load", event=_kill_model_server,
                 applies=lambda cls: cls.has_model_server),
        Scenario("reload", "graceful reload (SIGHUP) of the server in the middle of load", event=_reload,
                 disrupts_workers=True),
        Scenario("recycle", "workers recycled every ~1500 requests (max-requests, staggered) under load",
                 max_requests=1500,
                 disrupts_workers=True),
        Scenario("db-contention", "32 concurrent writers of 16 rows each on one SQLite file", concurrency=32,
                 instances=16),
        Scenario("bad-input", "a fixed corpus and generated malformed payloads, then correct answers"),
    )
}


def get(name: str, strategy_cls: type) -> Scenario:
    """The scenario by name; the error lists the valid ones, or says why it does not apply."""
    from forkwise.errors import ConfigError, UnknownNameError

    if name not in SCENARIOS:
        raise UnknownNameError("scenario", name, SCENARIOS)
    scenario = SCENARIOS[name]
    if not scenario.applies(strategy_cls):
        raise ConfigError(f"scenario {name!r} does not apply to strategy {strategy_cls.name!r}: {scenario.summary}")
    return scenario


def _recovery(samples: tuple[float, ...], event_at: float | None) -> tuple[float | None, bool]:
    """Seconds from the event to the first interval back at 80% of the rate before it.

    Without a single event (recycling, contention) the deployment must keep answering: no
    stretch of STALL_S without a 200, and answers in the window's last second.
    """
    if event_at is None:
        longest = run = 0
        for rate in samples:
            run = run + 1 if rate == 0 else 0
            longest = max(longest, run)
        kept_answering = longest * INTERVAL_S < STALL_S and any(s > 0 for s in samples[-int(1 / INTERVAL_S):])
        return None, kept_answering
    k = int(event_at / INTERVAL_S)
    before = [s for s in samples[:k] if s > 0]
    if not before:
        return None, False
    target = RECOVERED_AT * float(np.median(before))
    for i in range(k + 1, len(samples)):
        if samples[i] >= target:
            return round(max(0.0, (i + 1) * INTERVAL_S - event_at), 2), True
    return None, False


def run_disruption(run, v, scenario: Scenario, duration_s: float, timeout_s: float) -> Disruption:
    """Load with the built-in driver; fire the scenario's event a third of the way in."""
    from forkwise.matrix.load import run_load

    d = run.launch.deployment
    rows_per_body = [[(i + j) % len(v.inputs) for j in range(scenario.instances)] for i in range(len(v.inputs))]
    bodies = [json.dumps(v.payload(rows)).encode() for rows in rows_per_body]
    warmup_s, event_at = 0.5, duration_s / 3  # two thirds of the window left to recover in
    fired: dict[str, object] = {}

    def fire() -> None:
        time.sleep(warmup_s + event_at)
        fired["note"] = scenario.event(run)

    timer = threading.Thread(target=fire, daemon=True) if scenario.event else None
    if timer:
        timer.start()
    result = run_load(f"http://{d.host}:{d.port}/predict", bodies, concurrency=scenario.concurrency,
                      warmup_s=warmup_s, duration_s=duration_s, intervals=max(3, int(duration_s / INTERVAL_S)),
                      timeout_s=timeout_s, driver="builtin", sample_every=1)
    if timer:
        timer.join()
    # Every answer was kept: check each one, and remember its rows for the database check.
    wrong, workers = 0, set()
    for raw, index in zip(result.sampled_bodies, result.sampled_requests):
        correct, got, ids, worker, _ = v.compare(parse_json(raw), rows_per_body[index])
        wrong += not correct
        workers.add(worker)
        for row_id, out in zip(ids, got if got is not None else []):
            v.acknowledged[row_id] = [float(x) for x in out]
    recovery_s, recovered = _recovery(result.rps_samples, event_at if scenario.event else None)
    return Disruption(
        event=str(fired.get("note", "")), at_s=round(event_at, 2) if scenario.event else None,
        ok=result.total_ok_including_warmup, answers_wrong=wrong,
        failed=ErrorCounts(timeout=result.timeout, connect=result.connect, http_4xx=result.http_4xx,
                           http_5xx=result.http_5xx, wrong=wrong),
        http_503=result.http_503, unacknowledged=result.unacknowledged, recovery_s=recovery_s, recovered=recovered,
        rps_samples=tuple(round(x, 1) for x in result.rps_samples), interval_s=INTERVAL_S,
        workers_answering=tuple(sorted(workers)),
    )


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
    junk = [None, True, "1.0", [], {}, 1e308 * 10, float("nan"), 10**400, -(10**400), [[1]]]
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


def bad_input_campaign(run, v, n_generated: int = 300) -> tuple[ErrorCounts, list[str]]:
    """Send every payload; count what was not a clean 4xx. 200s are acknowledged like any."""
    d = run.launch.deployment
    width = int(np.prod(v.inputs.shape[1:]))
    counts = {"timeout": 0, "connect": 0, "5xx": 0}
    findings: list[str] = []
    for method, ctype, body, what in FIXED_CORPUS + generated_corpus(width, n_generated):
        headers = {"Content-Type": ctype} if ctype else {}
        if len(body) > d.settings.max_body_bytes:
            reply = send_oversized(d.host, d.port, "/predict", body, ctype, timeout_s=10)
        else:
            reply = request(d.host, d.port, method, "/predict", body or None, headers, timeout_s=10)
        if reply.kind in counts:
            counts[reply.kind] += 1
            if len(findings) < 10:
                findings.append(f"{what}: {reply.status or reply.kind} {reply.error}".strip())
        elif reply.kind == "ok":  # a mutation that happened to be valid: its rows count as acknowledged
            for row_id, out in zip(reply.body.get("ids", []), reply.body.get("predictions", [])):
                v.acknowledged[int(row_id)] = np.asarray(out, np.float32).ravel().tolist()
    return ErrorCounts(timeout=counts["timeout"], connect=counts["connect"], http_5xx=counts["5xx"]), findings
