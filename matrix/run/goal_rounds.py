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

from forkwise.errors import ForkwiseError
from forkwise.matrix.analysis import finalists as ranking
from forkwise.matrix.analysis.goal_pairs import goal_pairs
from forkwise.matrix.analysis.goals import GOAL_TARGETS
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.paired import PairPlan, decided, paired_ratio
from forkwise.matrix.records.run_info import FINALISTS_FILE, GOAL_ROUNDS_FILE, load_stage_file
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run.finalists import Pending, Window, boot_cell, fit_side_by_side, load_round, patience_s
from forkwise.matrix.run.profile import Profile


def finalists_best(out: Path) -> set[str]:
    """The best cell of each question the run's finalists ranked (none without a finalists stage)."""
    data = load_stage_file(out / FINALISTS_FILE, "questions")
    return {r.best for r in ranking.ranked(data).values()} if data else set()


def run_stage(out: Path, records: Sequence[CellRecord], prof: Profile, home: Path) -> dict[str, Any]:
    """Every goal pair's rounds into `out`/goal_rounds.json; returns what run.json keeps of it."""
    combined = combine_all(records)
    by_id = {r.cell_id: r for r in combined}
    seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    pairs: list[dict[str, Any]] = []
    plans = goal_pairs(combined, finalists_best(out))
    for plan in plans:
        comparisons = sum(p.goal == plan.goal for p in plans)  # the goal is judged family-wise over them
        rounds, stopped = _measure(plan, [by_id[plan.mine], by_id[plan.theirs]], prof, home, rng, comparisons)
        pairs.append({"plan": vars(plan), "rounds": rounds, "stopped": stopped})
        print(f"forkwise: goal {plan.goal} pair ({plan.about}): {stopped}", file=sys.stderr)
    (out / GOAL_ROUNDS_FILE).write_text(json.dumps({"seed": seed, "pairs": pairs}, indent=1))
    return {"file": GOAL_ROUNDS_FILE, "pairs": [f"goal {p['plan']['goal']}, {p['plan']['about']}: {p['stopped']}"
                                                 for p in pairs]}


def _measure(plan: PairPlan, cells: list[CellRecord], prof: Profile, home: Path, rng: random.Random,
             comparisons: int = 1) -> tuple[list[dict[str, Any]], str]:
    """The pair's rounds and why they stopped; a pair that will not boot is not measured (the goal is
    then judged on the passes, and says so)."""
    settings = prof.goals
    in_turn = not fit_side_by_side(cells)[0]
    window = Window(plan.concurrency, settings.window_s, settings.warmup_s, patience_s(cells, prof))
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            booted = [Pending(r, prof, home) if in_turn else boot_cell(stack, r, prof, home) for r in cells]
            while len(rounds) < settings.rounds:
                rounds.append(load_round(booted, rng, window))
                ratio = paired_ratio(plan, rounds, comparisons)  # the interval the goal is judged on
                if len(rounds) >= settings.min_rounds and ratio is not None and decided(ratio, GOAL_TARGETS[plan.goal]):
                    return rounds, f"decided after {len(rounds)} rounds ({time.monotonic() - started:.0f} s)"
        except ForkwiseError as exc:  # a FinalistError too: one would not boot or answer
            return rounds, f"stopped after {len(rounds)} rounds: {exc}"
    return rounds, f"rounds spent ({len(rounds)}, {time.monotonic() - started:.0f} s), undecided"
