"""The goal rounds, in the matrix runner's process after the finalists: the pair each ratio goal
turns on (``analysis.goal_pairs``), booted side by side and loaded in randomized interleaved rounds
at the goal's concurrency until the ratio's interval lies on one side of the goal's target, or
the profile's rounds are spent. What each round measured goes to `out`/goal_rounds.json; the goals
are judged on it (``analysis.paired``, ``analysis.goals``).

Every deployment started here is stopped in ``finally`` (an ExitStack owns them), as in the
finalists stage, whose booting and rounds this reuses.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from forkwise.errors import ForkwiseError
from forkwise.matrix.analysis import finalists as ranking
from forkwise.matrix.analysis.goal_pairs import goal_pairs
from forkwise.matrix.analysis.goals import GOAL_TARGETS
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.paired import PairPlan, decided, paired_ratio
from forkwise.matrix.records.run_info import FINALISTS_FILE, GOAL_ROUNDS_FILE
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run.finalists import MEMORY_HEADROOM, Pending, Window, boot_cell, load_round
from forkwise.matrix.run.profile import Profile


def finalists_best(out: Path) -> set[str]:
    """The best cell of each question the run's finalists ranked (none without a finalists stage)."""
    path = out / FINALISTS_FILE
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    return {ranking.rank([r["rps"] for r in q["rounds"]], data["target_mde_pct"]).best
            for q in data["questions"] if len(q["rounds"]) >= 2}


def run_stage(out: Path, records: Sequence[CellRecord], prof: Profile, home: Path) -> dict[str, Any]:
    """Every goal pair's rounds into `out`/goal_rounds.json; returns what run.json keeps of it."""
    combined = combine_all(records)
    by_id = {r.cell_id: r for r in combined}
    seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    pairs: list[dict[str, Any]] = []
    for plan in goal_pairs(combined, finalists_best(out)):
        rounds, stopped = _measure(plan, [by_id[plan.mine], by_id[plan.theirs]], prof, home, rng)
        pairs.append({"plan": vars(plan), "rounds": rounds, "stopped": stopped})
        print(f"forkwise: goal {plan.goal} pair ({plan.about}): {stopped}", file=sys.stderr)
    (out / GOAL_ROUNDS_FILE).write_text(json.dumps({"seed": seed, "pairs": pairs}, indent=1))
    return {"file": GOAL_ROUNDS_FILE, "pairs": [f"goal {p['plan']['goal']}, {p['plan']['about']}: {p['stopped']}"
                                                 for p in pairs]}


def _measure(plan: PairPlan, cells: list[CellRecord], prof: Profile, home: Path,
             rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    """The pair's rounds and why they stopped; a pair that will not boot is not measured (the goal is
    then judged on the passes, and says so)."""
    settings = prof.goals
    need_mb = sum(r.memory.total_pss_mb for r in cells if r.memory)
    in_turn = need_mb > MEMORY_HEADROOM * psutil.virtual_memory().available / 2**20
    patience_s = max(prof.limits.request_timeout_s, 3 * max(r.cold_start_s or 0.0 for r in cells))
    window = Window(plan.concurrency, settings.window_s, settings.warmup_s, patience_s)
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            booted = [Pending(r, prof, home) if in_turn else boot_cell(stack, r, prof, home) for r in cells]
            while len(rounds) < settings.rounds:
                measured = load_round(booted, rng, window)
                rounds.append({**measured, "values": measured[plan.metric]})
                ratio = paired_ratio(plan, rounds)
                if len(rounds) >= settings.min_rounds and ratio is not None and decided(ratio, GOAL_TARGETS[plan.goal]):
                    return rounds, f"decided after {len(rounds)} rounds ({time.monotonic() - started:.0f} s)"
        except ForkwiseError as exc:  # a FinalistError too: one would not boot or answer
            return rounds, f"stopped after {len(rounds)} rounds: {exc}"
    return rounds, f"rounds spent ({len(rounds)}, {time.monotonic() - started:.0f} s), undecided"
