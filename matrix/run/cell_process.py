"""One cell in its own process, both ends: the plan it is handed, the command, the deadline, the record.

The runner's side (``run_cell_process``, in the process of ``forkwise matrix``): each cell is a
``forkwise cell`` child in its own process group, with a hard deadline (forkwise.matrix.run.child's
protocol); it reads its plan from a JSON file (matrix.plan.CellPlan) and hands back one JSON record
in another (--record-out), whatever it logs on stdout. A failing, crashing or hanging cell is
recorded as such, and leaves nothing behind. The cell's side: ``run_cell_child``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import secrets
import sys
import tempfile
from pathlib import Path

from forkwise import postgres, servers
from forkwise.config import DEFAULT_DATABASE
from forkwise.deploy import check_host
from forkwise.errors import ChildFailed, ChildTimedOut
from forkwise.matrix import verdicts
from forkwise.matrix.records import rules
from forkwise.matrix.records.axes import STEADY, Cell
from forkwise.matrix.records.soak import SOAK
from forkwise.matrix.records.types import CellRecord, ErrorCounts, Evidence
from forkwise.matrix.run import environment, scenarios, soak, stability
from forkwise.matrix.run import profiling as profiler
from forkwise.matrix.run.cell import PATIENCE_COLD_STARTS, PHASE_FILE_VAR, run_cell
from forkwise.matrix.run.child import Deadline, run_child, write_result
from forkwise.matrix.run.open_loop import OpenLoopPlan
from forkwise.matrix.run.plan import PER_CELL_QUIET_BUDGET_S, CellPlan
from forkwise.matrix.run.profile import Profile
from forkwise.matrix.run.scenarios import recovery_allowance_s, window_s
from forkwise.procs import tagged_processes
from forkwise.strategies import registry

MATRIX_TAG_VAR = "FORKWISE_MATRIX_TAG"
STOP_GRACE_S = 10.0  # a cell stops its deployment with this grace (SIGTERM, then SIGKILL)
INTERRUPT_GRACE_S = 20.0  # an interrupted cell process stops its own server first (it turns SIGTERM into cleanup)
PER_LEVEL_QUIET_S = 1.5  # the most a level waits for a quiet host (matrix.stability)


def cell_deadline_s(cell: Cell, profile: Profile, profiling: bool = False) -> float:
    """How long a cell process may run before the runner stops it: the sum of every bounded wait
    of its plan, each at its bound, so only a stall of forkwise itself (or a bug) reaches it.
    Waits that follow the cell's cold start are bounded through the boot timeout."""
    limits, load = profile.limits, profile.load
    if limits.cell_deadline_s is not None:
        return limits.cell_deadline_s
    boot = limits.boot_timeout_s
    patience = max(limits.request_timeout_s, PATIENCE_COLD_STARTS * boot)
    if cell.scenario == SOAK:  # the probe, then each interval: its window, its requests in flight, a driver's start
        intervals = max(soak.MIN_INTERVALS, round(load.soak_duration_s / soak.interval_s(load.soak_duration_s)))
        work = soak.CAPACITY_PROBE_S + 1 + load.soak_duration_s + intervals * (patience + 5) + patience
    elif cell.scenario != STEADY:
        allowance = recovery_allowance_s(boot)
        work = window_s(load.scenario_duration_s, allowance)[1] + allowance + patience
    else:
        levels = len(load.levels)
        work = load.warmup_s + patience + levels * (load.duration_s + PER_LEVEL_QUIET_S + patience)
        # The host probe waits for an idle deployment, each time at most as long as the load before it.
        work += max(load.warmup_s, load.duration_s) + 2 * levels * load.duration_s
        work += HostWatch.PER_CELL_BUDGET_S
        work += profiling * profiler.FINISH_GRACE_S  # py-spy at the highest level only
        if load.mode == "open":  # each rate: its warm-up and window, its in-flight requests, an idle wait
            rate_s = OpenLoopPlan.warmup_s + load.duration_s
            work += (len(load.rates) or load.rate_steps) * (2 * rate_s + patience + STOP_GRACE_S)
    if cell.database != DEFAULT_DATABASE:  # its own PostgreSQL: started, stopped, restarted at most once
        work += 3 * postgres.PG_CTL_WAIT_S
    return round(2 * boot + work + 2 * STOP_GRACE_S, 1)


class HostWatch:
    """The matrix process's side of the CPU probe: the run's reference (stability.RunReference:
    calibrated when the first loaded cell asks for it, re-based when the cells' probes say it does
    not describe this host) and what is left of the run's waiting budget. A run with no load
    levels never probes."""

    PER_CELL_BUDGET_S = PER_CELL_QUIET_BUDGET_S

    def __init__(self, budget_s: float):
        self.reference = stability.RunReference()
        self.budget_left_s = budget_s

    def reference_ms(self) -> float:
        return self.reference.ms()

    def cell_budget_s(self) -> float:
        return min(self.PER_CELL_BUDGET_S, self.budget_left_s)

    def after_cell(self, record: CellRecord) -> None:
        self.budget_left_s = max(0.0, self.budget_left_s - record.evidence.timings_s.get("quiet_wait_s", 0.0))
        self.reference.observe(lv.host_slowdown for lv in record.load)

    def run_info(self, budget_s: float) -> dict:
        """What run.json says of the probe; empty when the run never probed."""
        ref = self.reference
        if ref.calibrated_ms is None:
            return {}
        return {"probe_reference_ms": round(ref.calibrated_ms, 3), "probe_final_reference_ms": round(ref.ms(), 3),
                "probe_rebased": ref.rebased, "quiet_wait_s": round(budget_s - self.budget_left_s, 1)}


def cell_plan(cell: Cell, profile: Profile, host: HostWatch | None = None, profile_dir: Path | None = None) -> CellPlan:
    """What the cell process runs: the cell's axes with the profile's load and limits (and py-spy
    at the highest level into `profile_dir`, when given)."""
    load, limits = profile.load, profile.limits
    plan = CellPlan(cell=cell, profile_dir=profile_dir, request_timeout_s=limits.request_timeout_s,
                    boot_timeout_s=limits.boot_timeout_s, gpu_policy=profile.gpu_policy)
    if cell.scenario == SOAK:
        return dataclasses.replace(plan, soak_duration_s=load.soak_duration_s, soak_fraction=load.soak_fraction)
    if cell.scenario != STEADY:
        return dataclasses.replace(plan, scenario_duration_s=load.scenario_duration_s)
    if load.levels:
        plan = dataclasses.replace(plan, load_levels=load.levels, duration_s=load.duration_s,
                                   warmup_s=load.warmup_s, intervals=load.intervals)
        if host is not None:
            plan = dataclasses.replace(plan, probe_reference_ms=round(host.reference_ms(), 3),
                                       quiet_budget_s=round(host.cell_budget_s(), 1))
    if load.mode == "open":
        plan = dataclasses.replace(plan, open_loop=True, p99_budget_ms=profile.recommend.p99_ms,
                                   rate_steps=load.rate_steps, duration_s=load.duration_s, rates=load.rates)
    return plan


def cell_command(plan_path: Path, record_path: Path, home: Path) -> list[str]:
    """The cell process: its plan in a JSON file, its record handed back in another."""
    return [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--plan", str(plan_path),
            "--record-out", str(record_path)]


def failed_cell_record(cell: Cell, judgement: verdicts.Judgement, log_tail: str, duration_s: float) -> CellRecord:
    """The record of a cell whose process did not hand one back (deadline, or forkwise failed)."""
    return CellRecord(
        cell=cell, threads=servers.get(cell.server).in_flight(cell.in_flight), verdict=judgement.verdict,
        cold_start_s=None, warm_all_s=None, requests=0, ok=0, errors=ErrorCounts(),
        rows_expected=0, rows_found=0, worker_pids=(),
        evidence=Evidence(findings=judgement.findings, log_tail=log_tail),
        environment=environment.current(),
        started_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        duration_s=round(duration_s, 2), judged_by=rules.CURRENT,
    )


def read_phase(path: Path) -> tuple[str, float | None]:
    """What a cell process last said it was doing (cell.PHASE_FILE_VAR): (phase, seconds into the
    cell), or ("", None) when it said nothing."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return "", None
    at, _, phase = text.partition("\t")
    try:
        return phase, float(at)
    except ValueError:
        return text, None


def run_cell_process(cell: Cell, profile: Profile, home: Path, host: HostWatch | None = None,
                     profile_dir: Path | None = None) -> CellRecord:
    """Run `forkwise cell` as a child with a hard deadline; always stop all it started."""
    tag = secrets.token_hex(8)
    deadline = Deadline.after(cell_deadline_s(cell, profile, profiling=profile_dir is not None))
    plan_json = cell_plan(cell, profile, host, profile_dir).to_json()
    with tempfile.TemporaryDirectory(prefix="forkwise-cell-phase-") as tmp:
        phase_file = Path(tmp) / "phase"
        env = {**os.environ, MATRIX_TAG_VAR: tag, PHASE_FILE_VAR: str(phase_file)}
        try:
            return run_child(lambda plan_path, record_path: cell_command(plan_path, record_path, home), plan_json,
                             deadline, CellRecord.from_dict, what="forkwise cell", stop_grace_s=INTERRUPT_GRACE_S,
                             env=env).result
        except ChildTimedOut as exc:
            judgement = verdicts.judge_missed_deadline(exc.deadline_s, *read_phase(phase_file))
            return failed_cell_record(cell, judgement, exc.output_tail, deadline.elapsed_s())
        except ChildFailed as exc:  # no record, or not a valid one: the cell itself failed
            return failed_cell_record(cell, verdicts.judge_no_record(exc.exit_code, exc.problem), exc.output_tail,
                                      deadline.elapsed_s())
        finally:
            # Whatever the cell started and did not stop (a server it could not reap) carries our tag.
            for leftover in tagged_processes(MATRIX_TAG_VAR, tag):
                leftover.kill()
            # A PostgreSQL server of a cell that was killed: found by its directory's owner, not a tag.
            postgres.reap_orphans()


def run_cell_child(plan: CellPlan, home: Path, keep: Path | None = None, record_out: Path | None = None) -> CellRecord:
    """The cell process's side (`forkwise cell`): check that the plan can run here before any model is
    built, run the cell, and hand its record back to the runner (`record_out`) once, whole."""
    from forkwise.model.spec import ensure_spec

    scenarios.get(plan.scenario, registry.get(plan.strategy), plan.database)  # fail fast on a bad name
    servers.get(plan.server)
    check_host(plan.device, plan.backend, plan.gpu_policy, plan.database)
    model = Path(plan.model).stem if plan.model.endswith(".keras") else plan.model
    spec_path = plan.spec_path or ensure_spec(home, plan.model, backend=plan.backend)
    plan = dataclasses.replace(plan.with_axes(model=model), spec_path=spec_path)
    if plan.profile_dir:
        profiler.require_py_spy()
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    record = run_cell(plan, workdir=keep)
    if record_out is not None:
        write_result(record_out, record.to_json())
    return record
