"""One matrix cell: start a deployment, verify it, load it, measure it, stop it, record it.

Runs in the process of ``forkwise cell`` (the matrix runs each cell as such a process,
in its own process group, with a hard deadline). Verification comes before load: a
cell that is not correct is never load-tested. Everything a verdict rests on is observed
here (the server log's out-of-memory evidence included) and judged by the rules of
forkwise.matrix.verdicts.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from forkwise import servers
from forkwise.config import DEFAULT_DATABASE
from forkwise.deploy import (
    RUN_TAG_VAR,
    DatabaseRun,
    Launch,
    database_for,
    device_env,
    launch,
    make_deployment,
    sqlite_url,
)
from forkwise.matrix import verdicts
from forkwise.matrix.records import rules
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.soak import SOAK, Soak
from forkwise.matrix.records.types import (
    BAD_INPUT,
    BootReadiness,
    CellRecord,
    Disruption,
    Evidence,
    LoadLevel,
    Memory,
    OpenLoop,
)
from forkwise.matrix.run import environment, resources, scenarios
from forkwise.matrix.run.cell_load import load_levels, open_loop_phase
from forkwise.matrix.run.cell_verify import verify
from forkwise.matrix.run.evidence import hung_workers_finding, server_log_evidence
from forkwise.matrix.run.http import post_json, request
from forkwise.matrix.run.model_server import model_server_stats
from forkwise.matrix.run.plan import CellPlan
from forkwise.matrix.run.progress import ProgressWatch
from forkwise.matrix.run.readiness import BOOT_RESOLUTION_S, FIRST_ANSWER_RETRY_S, ReadinessWatch, boot_truth
from forkwise.matrix.run.soak import run_soak
from forkwise.matrix.run.stacks import dump_stacks
from forkwise.matrix.run.verification import Verification
from forkwise.matrix.verdicts import Judgement
from forkwise.model.spec import ModelSpec
from forkwise.procs import free_port, tagged_processes
from forkwise.servers.base import Deployment, ServerTimeouts
from forkwise.strategies import registry
from forkwise.webapp.db import Database

# Stored rows against the answers that acknowledged them: the same numbers, twice serialised.
RTOL, ATOL = 1e-5, 1e-6
# Answers against the reference: per device (forkwise.gpu.TOLERANCES). On CPU, float32 batched
# and unbatched calls differ by round-off only; on a GPU, TF32 matmuls and other reduction orders.

# Set by the matrix runner: the file where a cell says what it is doing, so that a cell that misses
# its deadline can be told from a hung deployment (matrix.runner, verdicts.judge_missed_deadline).
PHASE_FILE_VAR = "FORKWISE_PHASE_FILE"
# Once a cell has answered, no request of it is given up on before this many of its own cold
# starts (and never before the profile's request timeout): a request that reaches a worker
# still loading its model waits about one cold start, so the patience follows the host's speed.
PATIENCE_COLD_STARTS = 3.0


class CellRun:
    """The life of one cell. `run()` always stops everything it started before returning."""

    def __init__(self, cell: CellPlan, workdir: Path, database: DatabaseRun | None = None):
        self.cell, self.workdir = cell, workdir
        self.database = database or DatabaseRun(DEFAULT_DATABASE, sqlite_url(workdir))
        self.timings: dict[str, float] = {}
        self.findings: list[str] = []
        self.launch: Launch | None = None
        self.progress: ProgressWatch | None = None
        self.readiness: BootReadiness | None = None  # /readyz against the first answer (run.readiness)
        self.first_tries: list[tuple[float, float, bool]] = []  # first-answer tries: (sent, answered; correct)
        self.created = time.monotonic()
        self.memory: Memory | None = None
        self.load_levels: tuple[LoadLevel, ...] = ()
        self.disruption: Disruption | None = None
        self.rows = verdicts.RowsSeen(acknowledged=0)
        self.stacks: tuple[str, ...] = ()
        self.open_loop: OpenLoop | None = None
        self.soak: Soak | None = None

    def enter(self, phase: str) -> None:
        """Say what the cell does now, where the matrix runner asked (PHASE_FILE_VAR): should the
        cell miss its deadline, the runner says what forkwise was doing instead of blaming the deployment."""
        path = os.environ.get(PHASE_FILE_VAR)
        if path:
            Path(path).write_text(f"{time.monotonic() - self.created:.1f}\t{phase}\n")

    @property
    def launched(self) -> Launch:
        """The deployment's launch, for the phases: run() launches it before any of them."""
        if self.launch is None:
            raise AssertionError("a cell phase ran before run() launched the deployment")
        return self.launch

    # --- phases ---------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self.launched.group.started_at

    def wait_alive(self) -> bool:
        d = self.launched.deployment
        deadline = self.launched.group.started_at + self.cell.boot_timeout_s
        while time.monotonic() < deadline:
            if not self.launched.group.alive():
                self.findings.append(f"server exited with code {self.launched.group.returncode} before answering")
                return False
            if request(d.host, d.port, "GET", "/healthz", timeout_s=2).kind == "ok":
                self.timings["alive_s"] = self._elapsed()
                return True
            time.sleep(0.1)
        self.findings.append(f"/healthz did not answer within {self.cell.boot_timeout_s} s")
        return False

    def still_computing(self, slice_s: float) -> bool:
        """Keep waiting for an answer? Only while the deployment uses CPU (see matrix.progress)."""
        return self.progress is None or self.progress.computing(slice_s)

    @property
    def patience_s(self) -> float:
        """How long any request of this cell may take once it answered: the profile's request
        timeout, or PATIENCE_COLD_STARTS of the cell's own measured cold start if that is longer."""
        cold = self.timings.get("cold_start_s", 0.0)
        return max(self.cell.request_timeout_s, PATIENCE_COLD_STARTS * cold)

    def first_answer(self, v: Verification) -> str:
        """Send one instance until a correct answer; returns 'ok' or the kind that stopped it.

        503s and refused connections while workers warm up are retried, not counted. The first
        request may import the runtime and load the model (import-in-route, locked-singleton):
        it is waited for as long as the deployment computes, up to the boot deadline, and is a
        timeout only when the deployment stopped making progress.
        """
        d = self.launched.deployment
        deadline = self.launched.group.started_at + self.cell.boot_timeout_s
        last, tries = "boot", Counter[str]()
        while time.monotonic() < deadline and self.launched.group.alive():
            sent = self._elapsed()
            reply = post_json(d.host, d.port, "/predict", v.payload([0]), self.cell.request_timeout_s,
                              keep_waiting=self.still_computing, ceiling_s=max(1.0, deadline - time.monotonic()))
            last = reply.kind
            tries[last] += 1
            self.first_tries.append((sent, self._elapsed(), last == "ok" and v.compare(reply.body, [0])[0]))
            if last in ("ok", "timeout") or (last == "5xx" and reply.status != 503):
                last = v.check(reply, [0], self._elapsed())
                self.timings["first_request_s"] = reply.elapsed_s
                if last == "ok":
                    self.timings["cold_start_s"] = self._elapsed()
                    if reply.elapsed_s > self.cell.request_timeout_s:
                        self.findings.append(f"the first request took {reply.elapsed_s:.1f} s, longer than the "
                                             f"{self.cell.request_timeout_s:g} s request timeout, while the "
                                             f"deployment computed: slow, not hung")
                elif last == "timeout":
                    self.findings.append(f"the first request: {reply.error}")
                return last
            time.sleep(FIRST_ANSWER_RETRY_S)  # 503 while the model warms, or a worker (re)starting: try again
        if not self.launched.group.alive():
            self.findings.append(f"server exited with code {self.launched.group.returncode}")
        else:
            self.findings.append(f"no correct answer within {self.cell.boot_timeout_s} s; replies: {dict(tries)}")
        return last

    def rows_check(self, v: Verification, slack: int = 0) -> verdicts.RowsSeen:
        """The database against the acknowledged answers; `slack`: requests whose answers never
        came back (the server may have written their rows)."""
        self.enter("checking the database against the answers")
        db = Database(self.launched.deployment.settings.database_url)
        total = db.count()
        stored = db.outputs(list(v.acknowledged))
        missing = tuple(i for i in v.acknowledged if i not in stored)
        differing = tuple(i for i, out in v.acknowledged.items()
                          if i in stored and not np.allclose(stored[i], out, rtol=RTOL, atol=ATOL))
        self.rows = verdicts.RowsSeen(acknowledged=len(v.acknowledged), missing=missing, differing=differing,
                                      total=total, slack=slack)
        return self.rows

    # --- the whole cell -----------------------------------------------------------------


    def run(self) -> CellRecord:
        cell = self.cell
        started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        strategy_cls = registry.get(cell.strategy)
        scenario = scenarios.get(cell.scenario, strategy_cls, cell.database)
        assert cell.spec_path is not None, "the cell command resolves the model to a spec file before the cell runs"
        deployment = plan_deployment(cell, cell.spec_path, self.workdir, self.database.url, scenario.max_requests)
        spec = ModelSpec.load(cell.spec_path)
        v = Verification.of(spec, cell.strategy, cell.device)
        self.enter("launching the deployment")
        self.launch = launch(deployment)
        try:
            master = self.launch.group.pid
            with resources.WorkerWatch(master) as watch, ProgressWatch(master) as self.progress, \
                    self.database.connection_watch() as connections:
                judgement = self.observe(v, scenario, spec, watch)
                if not judgement.verdict.ok and self.launch.group.alive():
                    self.failing_state(judgement)
        finally:
            self.enter("stopping the deployment")
            killed = self.launch.group.stop()
            if killed:
                self.findings.append(f"had to SIGKILL {len(killed)} processes at stop (pids {killed[:8]})")
            leftovers = tagged_processes(RUN_TAG_VAR, self.launch.tag)
            for proc in leftovers:  # descendants that left the group: still ours, stop them
                self.findings.append(f"process {proc.pid} outlived its group; killed")
                proc.kill()
        judgement, highlights = server_log_evidence(judgement, self.launched.group.log_path, servers.get(cell.server))
        return self.record(judgement, highlights, v, deployment, connections, started_at, t0)

    def record(self, judgement: Judgement, highlights: tuple[str, ...], v: Verification, deployment: Deployment,
               connections: Any, started_at: str, t0: float) -> CellRecord:
        """What the cell saw, judged, as its record."""
        cell = self.cell
        strategy_cls = registry.get(cell.strategy)
        log_tail = "" if judgement.verdict.ok else self.launched.group.log_tail(40)
        return CellRecord(
            cell=cell.cell, threads=deployment.threads, verdict=judgement.verdict,
            cold_start_s=_round(self.timings.get("cold_start_s")), warm_all_s=_round(self.timings.get("warm_all_s")),
            requests=v.requests, ok=v.kinds["ok"], errors=v.errors(),
            rows_expected=self.rows.acknowledged, rows_found=self.rows.intact,
            worker_pids=tuple(sorted(v.workers_seen)),
            evidence=Evidence(
                findings=(*judgement.findings, *self.findings, *v.findings),
                timings_s={k: round(x, 3) for k, x in self.timings.items()},
                log_tail=log_tail,
                log_highlights=highlights,
                stacks=self.stacks,
            ),
            environment=environment.current(), started_at=started_at, duration_s=round(time.monotonic() - t0, 2),
            judged_by=rules.CURRENT,
            settings={"preload_app": deployment.settings.preload_app, "threads": deployment.threads,
                      "request_timeout_s": cell.request_timeout_s,
                      "patience_s": round(self.patience_s, 2), "worker_timeout_s": cell.worker_timeout_s,
                      "rtol": v.rtol, "atol": v.atol, "gpu_policy": cell.gpu_policy if cell.device == "gpu" else "",
                      "device_env": {k: v for k, v in device_env(deployment).items()},
                      "database_server": self.database.version,
                      "intra_op_threads": deployment.settings.intra_op_threads,
                      **strategy_cls.knobs(deployment.settings)},
            load=self.load_levels, memory=self.memory, disruption=self.disruption,
            db_connections_peak=connections.peak, db_server_log=connections.log_highlights,
            open_loop=self.open_loop, soak=self.soak,
            # Read once the deployment stopped: each model server wrote its stats a last time as it did.
            model_server=model_server_stats(strategy_cls, deployment.settings), readiness=self.readiness,
        )

    # --- what was seen, judged (every rule is in forkwise.matrix.verdicts) --------------

    def observe(self, v: Verification, scenario: scenarios.Scenario, spec: ModelSpec,
                watch: resources.WorkerWatch) -> Judgement:
        """Verify; only a correct cell goes on to its scenario or its load. Each phase hands what it
        saw to the verdict rules."""
        healthy, first = self.boot(v)
        judgement = verdicts.judge_verification(verdicts.VerificationSeen(
            healthy=healthy, first=first, answers=v.answers(), workers_answered=len(v.workers_seen),
            workers=self.workers(watch), server_alive=self.launched.group.alive(), patience_s=self.patience_s))
        if healthy:
            judgement = judgement.then(verdicts.judge_rows(self.rows_check(v)))
        allowance = scenarios.recovery_allowance_s(self.timings.get("cold_start_s", 0.0))
        if judgement.verdict.ok:
            judgement = judgement.then(verdicts.judge_readiness(self.readiness, None, BOOT_RESOLUTION_S, allowance))
        if not judgement.verdict.ok:
            return judgement
        self.memory = resources.measure_memory(self.launched.group.pid)
        if scenario.name == BAD_INPUT:
            judgement = self.bad_input(v)
        elif scenario.name == SOAK:
            self.soak = run_soak(self, v, self.cell.soak_fraction, self.cell.soak_duration_s)
            judgement = verdicts.judge_soak(self.soak).then(verdicts.judge_workers(self.workers(watch)))
        elif scenario.name != STEADY:
            self.enter(f"running the {scenario.name} scenario")
            self.disruption = scenarios.run_disruption(self, v, scenario, self.cell.scenario_duration_s,
                                                       self.patience_s)
            judgement = verdicts.judge_disruption(verdicts.DisruptionSeen(
                scenario=scenario.name, has_event=scenario.event is not None,
                disrupts_workers=scenario.disrupts_workers, disruption=self.disruption, workers=self.workers(watch)))
            judgement = judgement.then(verdicts.judge_readiness(None, self.disruption.readiness, BOOT_RESOLUTION_S,
                                                                allowance))
        elif self.cell.load_levels or self.cell.open_loop:
            if self.cell.load_levels:
                self.load_levels = tuple(load_levels(self, v))
                judgement = verdicts.judge_load(self.load_levels, self.workers(watch))
            if judgement.verdict.ok and self.cell.open_loop:
                self.open_loop = open_loop_phase(self, v)
        if scenario.name != STEADY:
            # The soak's rows are counted by its own rule: here they are rows beyond the verification's.
            slack = self.disruption.unacknowledged if self.disruption else 0
            slack += self.soak.rows_found + self.soak.unacknowledged if self.soak else 0
            judgement = judgement.then(verdicts.judge_rows(self.rows_check(v, slack)))
        return judgement

    def boot(self, v: Verification) -> tuple[bool, str]:
        """Alive, the first correct answer and verification, with /readyz polled beside them: (alive,
        how the first-answer phase ended)."""
        self.enter("waiting for /healthz")
        d = self.launched.deployment
        with ReadinessWatch(d.host, d.port, self.cell.request_timeout_s) as probe:
            healthy, first = self.wait_alive(), "boot"
            if healthy:
                self.enter("waiting for the first answer")
                first = self.first_answer(v)
                if first == "ok":
                    self.enter("verifying")
                    verify(self, v)
        self.readiness = boot_truth(probe.polls, self.launched.group.started_at, self.first_tries)
        return healthy, first

    def workers(self, watch: resources.WorkerWatch) -> verdicts.Workers:
        return verdicts.Workers(configured=self.launched.deployment.workers, seen=tuple(watch.seen),
                                vanished=tuple(watch.vanished))

    def bad_input(self, v: Verification) -> Judgement:
        """The bad-input campaign, then the same verification again: still correct?"""
        self.enter("sending bad input")
        failed, findings = scenarios.bad_input_campaign(self, v)
        self.findings += findings
        before = v.requests
        self.enter("verifying after bad input")
        verify(self, v)
        return verdicts.judge_bad_input(verdicts.BadInputSeen(campaign=failed, after=v.answers(),
                                                              verified_after=v.requests - before))

    def failing_state(self, judgement: Judgement) -> None:
        """The failing deployment, before it is stopped: its memory process by process (a master
        holding the GPU before any worker answered is the evidence for a fork-safety failure) and,
        when it hangs, each worker's CPU time and where it is stuck."""
        master = self.launched.group.pid
        state = resources.measure_memory(master)
        self.memory = self.memory or state
        if judgement.hung:
            self.findings.append(hung_workers_finding(state))
            self.enter("reading the stacks of the hung workers")
            started = time.monotonic()
            self.stacks = dump_stacks(master, budget_s=self.cell.boot_timeout_s)
            self.timings["stacks_s"] = time.monotonic() - started


def plan_deployment(plan: CellPlan, spec_path: Path, run_dir: Path, database_url: str,
                    max_requests: int = 0) -> Deployment:
    """The deployment a plan describes, on a free port, in `run_dir`, writing to `database_url`."""
    return make_deployment(
        strategy=plan.strategy, server=plan.server, workers=plan.workers, spec_path=spec_path,
        run_dir=run_dir, port=free_port(), overrides=plan.overrides,
        timeouts=ServerTimeouts(worker_s=plan.worker_timeout_s), max_requests=max_requests,
        backend=plan.backend, device=plan.device, gpu_policy=plan.gpu_policy,
        database_url=database_url, db_reset=plan.db_reset, db_in_master=plan.db_in_master,
        in_flight=plan.in_flight,
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_cell(cell: CellPlan, workdir: Path | None = None) -> CellRecord:
    """Run one cell in a fresh private work directory (kept only when `workdir` is given)."""
    if workdir is not None:
        return _run_with_database(cell, workdir)
    with tempfile.TemporaryDirectory(prefix="forkwise-cell-") as tmp:
        return _run_with_database(cell, Path(tmp))


def _run_with_database(cell: CellPlan, workdir: Path) -> CellRecord:
    """The cell's database (a PostgreSQL server of its own, or a SQLite file) lives as long as the cell."""
    with database_for(cell.database, workdir) as database:
        return CellRun(cell, workdir, database).run()
