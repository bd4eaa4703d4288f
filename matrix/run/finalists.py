"""The finalists stage, in the matrix runner's process after the passes: per question, boot the
cells that could be the best side by side, then measure them in randomized interleaved rounds
until the ranking is decided or the round budget is spent (see ``analysis.finalists``).

Every deployment started here is stopped in ``finally`` (an ExitStack owns them, with their
databases and work directories). Idle finalists use no CPU: only the one being loaded computes.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from forkwise.deploy import Launch, database_for, launch
from forkwise.errors import FinalistError, ForkwiseError
from forkwise.matrix.analysis import finalists as analysis
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.recommend import questions, served_label
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.run_info import FINALISTS_FILE
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run.cell import plan_deployment
from forkwise.matrix.run.http import post_json
from forkwise.matrix.run.load import run_load
from forkwise.matrix.run.plan import CellPlan
from forkwise.matrix.run.profile import Profile
from forkwise.matrix.run.verification import Verification
from forkwise.model.spec import ModelSpec, ensure_spec

MEMORY_HEADROOM = 0.8  # finalists boot side by side only within this share of the memory available now


@dataclass
class Finalist:
    cell: Cell
    launched: Launch
    url: str
    bodies: list[bytes]


@dataclass
class Question:
    """One question's stage: its finalists, its rounds, why it stopped."""

    served: str
    cells: list[str]
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: order, rps, p99_ms, errors
    stopped: str = ""
    notes: list[str] = field(default_factory=list)

    def rps_rounds(self) -> list[dict[str, float]]:
        return [r["rps"] for r in self.rounds]


def run_stage(out: Path, records: Sequence[CellRecord], prof: Profile, budgets: Budgets, home: Path) -> dict:
    """Every question's finalists, measured interleaved into `out`/finalists.json; returns what
    run.json keeps of it."""
    settings = prof.finalists
    combined = combine_all(records)
    concurrency = settings.concurrency or max(prof.load.levels)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    found = []
    for what in questions(combined):
        cells = analysis.finalists(combined, budgets, what, concurrency, settings.max_cells)
        question = Question(served_label(what), [r.cell_id for r in cells])
        if len(cells) < 2:
            question.stopped = "fewer than two finalists: nothing to rank"
        else:
            _measure(question, cells, prof, home, concurrency, rng)
        found.append(question)
        print(f"forkwise: finalists of {question.served}: {question.stopped}", file=sys.stderr)
    data = {"concurrency": concurrency, "seed": seed, "target_mde_pct": settings.target_mde_pct,
            "questions": [vars(q) for q in found]}
    (out / FINALISTS_FILE).write_text(json.dumps(data, indent=1))
    return {"file": FINALISTS_FILE, "concurrency": concurrency,
            "questions": {q.served: q.stopped for q in found}}


def _measure(question: Question, cells: list[CellRecord], prof: Profile, home: Path, concurrency: int,
             rng: random.Random) -> None:
    settings = prof.finalists
    fits, need_mb, free_mb = fit_side_by_side(cells)
    in_turn = settings.boot == "in-turn" or not fits
    if in_turn:
        question.notes.append(f"booted in turn, each for its window (side by side they need {need_mb:.0f} MB, "
                              f"{free_mb:.0f} MB is available)" if settings.boot == "auto" else
                              "booted in turn, each for its window (the profile's [finalists] boot)")
    window = Window(concurrency, settings.window_s, settings.warmup_s, patience_s(cells, prof))
    with contextlib.ExitStack() as stack:
        try:
            booted = [Pending(r, prof, home) if in_turn else boot_cell(stack, r, prof, home) for r in cells]
        except ForkwiseError as exc:
            question.stopped = f"not measured: a finalist did not boot ({exc})"
            return
        started = time.monotonic()
        while True:
            try:
                question.rounds.append(load_round(booted, rng, window))
            except FinalistError as exc:  # booted in turn, one did not boot this time
                question.stopped = f"stopped after {len(question.rounds)} rounds: {exc}"
                return
            question.stopped = _stop_reason(question, settings, time.monotonic() - started)
            if question.stopped:
                return
            booted = _without_the_behind(question, booted, settings)


def fit_side_by_side(cells: Sequence[CellRecord]) -> tuple[bool, float, float]:
    """(whether the cells' deployments fit in the memory available now, their total PSS, MB available)."""
    need_mb = sum(r.memory.total_pss_mb for r in cells if r.memory)
    free_mb = psutil.virtual_memory().available / 2**20
    return need_mb <= MEMORY_HEADROOM * free_mb, need_mb, free_mb


def patience_s(cells: Sequence[CellRecord], prof: Profile) -> float:
    """How long a request of a round may take: the request timeout, or 3 of the slowest cell's cold starts."""
    return max(prof.limits.request_timeout_s, 3 * max(r.cold_start_s or 0.0 for r in cells))


@dataclass(frozen=True)
class Window:
    """What each finalist gets in a round."""

    concurrency: int
    window_s: float
    warmup_s: float
    patience_s: float


@dataclass
class Pending:
    """A finalist booted for its own window only, each round (when they do not fit side by side)."""

    record: CellRecord
    prof: Profile
    home: Path

    @property
    def cell(self) -> Cell:
        return self.record.cell


def _without_the_behind(question: Question, booted: list, settings: Any) -> list:
    """Past the minimum rounds, a finalist whose whole interval is below the best is measured no
    more: its rounds so far stay in the ranking, and the rounds that remain go to the close ones."""
    if len(question.rounds) < settings.min_rounds or len(booted) <= 2:
        return booted
    ranking = analysis.rank(question.rps_rounds(), settings.target_mde_pct)
    behind = {s.cell_id for s in ranking.standings if s.verdict == analysis.BEHIND}
    kept = [f for f in booted if f.cell.id not in behind]
    for f in booted:
        if f.cell.id in behind:
            question.notes.append(f"{f.cell.id}: behind after {len(question.rounds)} rounds, measured no more")
    return kept if len(kept) >= 2 else booted


def _stop_reason(question: Question, settings: Any, elapsed_s: float) -> str:
    rounds = len(question.rounds)
    if rounds < settings.min_rounds:
        return ""
    ranking = analysis.rank(question.rps_rounds(), settings.target_mde_pct)
    if ranking.decided:
        return f"decided after {rounds} rounds"
    if rounds >= settings.max_rounds:
        return f"round budget spent ({rounds} rounds), undecided"
    if elapsed_s >= settings.budget_s:
        return f"time budget spent ({elapsed_s:.0f} s, {rounds} rounds), undecided"
    return ""


def load_round(booted: list, rng: random.Random, window: Window) -> dict[str, Any]:
    """Every finalist loaded once, in a random order (one booted in turn: for its window only)."""
    order = rng.sample(booted, len(booted))
    rps, p50, p99, errors = {}, {}, {}, {}
    for finalist in order:
        with contextlib.ExitStack() as stack:
            if isinstance(finalist, Pending):
                finalist = boot_cell(stack, finalist.record, finalist.prof, finalist.home)
            result = run_load(finalist.url, finalist.bodies, concurrency=window.concurrency, warmup_s=window.warmup_s,
                              duration_s=window.window_s, intervals=1, timeout_s=window.patience_s)
        cell_id = finalist.cell.id
        failed = result.timeout + result.connect + result.http_4xx + result.http_5xx
        rps[cell_id] = round(result.ok / result.duration_s, 1) if result.duration_s > 0 and not failed else 0.0
        p50[cell_id], p99[cell_id] = round(result.latency_ms["p50"], 3), round(result.latency_ms["p99"], 3)
        errors[cell_id] = failed
    return {"order": [f.cell.id for f in order], "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def boot_cell(stack: contextlib.ExitStack, record: CellRecord, prof: Profile, home: Path) -> Finalist:
    """One finalist's deployment, started and answering correctly, owned by `stack`."""
    cell = record.cell
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="forkwise-finalist-")))
    database = stack.enter_context(database_for(cell.database, workdir))
    spec_path = ensure_spec(home, cell.model, backend=cell.backend)
    deployment = plan_deployment(CellPlan(cell=cell, gpu_policy=prof.gpu_policy), spec_path, workdir, database.url)
    launched = launch(deployment)
    stack.callback(launched.group.stop)
    v = Verification.of(ModelSpec.load(spec_path), cell.strategy, cell.device)
    _wait_correct(launched, v, prof.limits.boot_timeout_s, prof.limits.request_timeout_s)
    url = f"http://{deployment.host}:{deployment.port}/predict"
    return Finalist(cell, launched, url, [json.dumps(v.payload([i])).encode() for i in range(len(v.inputs))])


def _wait_correct(launched: Launch, v: Verification, boot_timeout_s: float, request_timeout_s: float) -> None:
    """Until the deployment answers correctly, at most the profile's boot timeout."""
    d = launched.deployment
    deadline = launched.group.started_at + boot_timeout_s
    while time.monotonic() < deadline and launched.group.alive():
        reply = post_json(d.host, d.port, "/predict", v.payload([0]), request_timeout_s)
        if reply.kind == "ok":
            if v.check(reply, [0], 0.0) == "ok":
                return
            raise FinalistError(f"{d.settings.strategy} under {d.server} answered wrongly")
        time.sleep(0.2)
    raise FinalistError(f"{d.settings.strategy} under {d.server}: no correct answer within {boot_timeout_s:g} s")
