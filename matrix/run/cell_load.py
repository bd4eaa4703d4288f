"""A cell's load phase, in the cell process: every closed-loop level of its plan between host
probes, its rows and sampled answers checked, then its open-loop rates (matrix.run.open_loop)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

from forkwise.matrix.analysis.goal_provenance import write_profile_provenance
from forkwise.matrix.analysis.goals import profile_label
from forkwise.matrix.records.types import LoadLevel, OpenLoop
from forkwise.matrix.run import environment, resources, stability
from forkwise.matrix.run import profiling as profiler
from forkwise.matrix.run.http import parse_json
from forkwise.matrix.run.load import LoadResult, level_record, run_load
from forkwise.matrix.run.open_loop import measure_open_loop
from forkwise.matrix.run.running import RunningCell
from forkwise.matrix.run.verification import Verification
from forkwise.webapp.db import Database

STORED_SAMPLE = 200  # rows written under a load level checked against the reference (wrk driver)


def open_loop_phase(run: RunningCell, v: Verification) -> OpenLoop:
    """Open-loop rates after the load levels, searched below their peak (forkwise.matrix.run.open_loop)."""
    run.enter("open-loop load")
    d, master = run.launched.deployment, run.launched.group.pid
    bodies = [json.dumps(v.payload([i])).encode() for i in range(len(v.inputs))]
    peak = max((lv.rps for lv in run.load_levels), default=None)
    url = f"http://{d.host}:{d.port}/predict"
    assert run.cell.open_loop_plan is not None, "a cell runs its open-loop phase only when its plan has one"
    found = measure_open_loop(url, bodies, run.cell.open_loop_plan, run.patience_s, peak,
                              Database(d.settings.database_url).count, lambda: resources.cpu_seconds(master))
    for lv in found.levels:
        if lv.rows_found < lv.rows_expected:
            run.findings.append(f"open loop at {lv.rate_rps:g} req/s: {lv.rows_expected - lv.rows_found} "
                                f"acknowledged rows missing")
    return found


@dataclass
class LevelLoad:
    """What every load level of one cell shares: its target, its bodies and its host gate."""

    run: RunningCell
    v: Verification
    url: str
    bodies: list[bytes]
    db: Database
    gate: stability.QuietGate
    in_flight: int = 0  # requests of the warm-up whose answers never came back: they may write rows later

    @property
    def master(self) -> int:
        return self.run.launched.group.pid


def load_levels(run: RunningCell, v: Verification) -> Iterator[LoadLevel]:
    """Each load level of the plan, measured: a warm-up at the highest level first, then every
    level between two host probes taken while the deployment is idle (stability.QuietGate)."""
    d, cell = run.launched.deployment, run.cell
    master = run.launched.group.pid
    shared = LevelLoad(run, v, f"http://{d.host}:{d.port}/predict",
                       [json.dumps(v.payload([i])).encode() for i in range(len(v.inputs))],
                       Database(d.settings.database_url),
                       stability.QuietGate(cell.probe_reference_ms, cell.quiet_budget_s,
                                           cpu_seconds=lambda: resources.cpu_seconds(master)))
    if cell.warmup_s > 0:
        run.enter("load warm-up")
        # Once per launch, at the highest level: thread pools, queues and the model server's
        # batches reach their steady state before anything is measured. Its requests are not
        # counted: every level counts its own rows from here on.
        shared.in_flight = run_load(shared.url, shared.bodies, concurrency=max(cell.load_levels), warmup_s=0.0,
                                    duration_s=cell.warmup_s, intervals=1, timeout_s=run.patience_s,
                                    driver=cell.driver).unacknowledged
    drain_s = cell.warmup_s or cell.duration_s
    for concurrency in cell.load_levels:
        level, drain_s = _one_level(shared, concurrency, drain_s)
        yield level


def _one_level(shared: LevelLoad, concurrency: int, drain_s: float) -> tuple[LoadLevel, float]:
    """One level, its host probes around it and its rows: (the level, how long the next drain may take)."""
    run, cell, db = shared.run, shared.run.cell, shared.db
    run.enter(f"waiting for an idle deployment and a quiet host before concurrency {concurrency}")
    slowdown_before = shared.gate.before(drain_s)
    rows_before, cpu_before, last_id_before = db.count(), resources.cpu_seconds(shared.master), db.last_id()
    profiling = _start_profiler(run, concurrency)
    run.enter(f"load at concurrency {concurrency}")
    started = time.monotonic()
    result = run_load(shared.url, shared.bodies, concurrency=concurrency, warmup_s=0.0, duration_s=cell.duration_s,
                      intervals=cell.intervals, timeout_s=run.patience_s, driver=cell.driver)
    server_cpu = resources.cpu_seconds(shared.master) - cpu_before
    ended = time.monotonic()
    idle_s = run.progress.longest_idle_s(started, ended) if run.progress else None
    worker_stall_s = run.progress.longest_worker_stall_s(started, ended) if run.progress else None
    run.enter(f"waiting for the profiler at concurrency {concurrency}")
    for path in profiler.finish(profiling, timeout_s=profiler.FINISH_GRACE_S):
        run.findings.append(f"profile at concurrency {concurrency}: {path}")
    run.enter(f"the host probe after concurrency {concurrency}, once the deployment is idle")
    slowdown_after = shared.gate.after(result.duration_s)
    if slowdown_after is None:
        run.findings.append(f"no host probe after concurrency {concurrency}: the deployment still used "
                            f"CPU {result.duration_s:.1f} s after the level")
    run.timings["quiet_wait_s"] = round(shared.gate.waited_s, 3)
    run.timings["idle_wait_s"] = round(shared.gate.drained_s, 3)
    sampled, wrong = _sampled_wrong(shared.v, result, db, last_id_before)
    unacknowledged, shared.in_flight = result.unacknowledged + shared.in_flight, 0
    level = level_record(concurrency, result, sampled, wrong, db.count() - rows_before, unacknowledged, server_cpu,
                         stability.level_slowdown(slowdown_before, slowdown_after))
    level = dataclasses.replace(level, longest_idle_s=None if idle_s is None else round(idle_s, 3),
                                blocked_after_s=cell.request_timeout_s if idle_s is not None else None,
                                longest_worker_stall_s=None if worker_stall_s is None else round(worker_stall_s, 3))
    return level, result.duration_s


def _start_profiler(run: RunningCell, concurrency: int) -> list:
    """py-spy on the deployment at the plan's highest level, when the plan asks for profiles."""
    cell = run.cell
    if not cell.profile_dir or concurrency != max(cell.load_levels):
        return []
    label = profile_label(cell.strategy, cell.server, run.launched.deployment.workers, cell.model, concurrency)
    profiling = profiler.start(run.launched.group.pid, cell.profile_dir, cell.duration_s, label)
    write_profile_provenance(cell.profile_dir, label, environment.current())
    return profiling


def _sampled_wrong(v: Verification, result: LoadResult, db: Database, last_id_before: int) -> tuple[int, int]:
    """Answers checked under load, and how many were wrong: the bodies the driver kept, or (wrk
    hands back no bodies) the rows the workers wrote, the same numbers as their answers."""
    wrong = 0
    for raw, index in zip(result.sampled_bodies, result.sampled_requests, strict=True):
        if not v.compare(parse_json(raw), [index])[0]:
            wrong += 1
    sampled = len(result.sampled_bodies)
    if not sampled:
        stored = db.sample_after(last_id_before, STORED_SAMPLE)
        sampled, wrong = len(stored), v.stored_rows_wrong(stored)
    return sampled, wrong
