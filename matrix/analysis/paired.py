"""A ratio between two cells measured interleaved: the pair a goal turns on, loaded in rounds
(each round loads both, in a random order, for the same short window), and the ratio of their
rounds with its confidence interval.

Two launches minutes apart differ 14-21% on a drifting host whatever the cells are, so a goal
judged on the passes alone is undecided or decided by noise. Within a round both cells meet the
same host, so the paired log-ratio cancels its drift. Pure: rounds in, a ratio out
(``run.goal_rounds`` measures them, ``analysis.goals`` judges the goals on them).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkwise.errors import RecordError
from forkwise.matrix.analysis.significance import FAMILY_ALPHA, z_power
from forkwise.matrix.records.run_info import load_stage_file
from forkwise.matrix.records.stats import t_quantile

METRICS = ("rps", "p50_ms")  # what a pair's rounds compare: throughput, or the median latency


@dataclass(frozen=True)
class PairPlan:
    """Which two cells a goal turns on, at which load, compared on which metric (mine / theirs)."""

    goal: int
    mine: str  # cell id
    theirs: str  # cell id
    concurrency: int
    metric: str  # one of METRICS
    about: str  # what the pair stands for in the goal, e.g. "large model"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise RecordError(f"a pair's metric is one of {', '.join(METRICS)}, not {self.metric!r}")


@dataclass(frozen=True)
class PairRatio:
    """mine / theirs over the rounds both answered without an error, paired by round."""

    plan: PairPlan
    ratio: float  # geometric mean of the per-round ratios
    low: float  # its confidence interval (family-wise FAMILY_ALPHA over the goal's pairs)
    high: float
    rounds: int
    mine_value: float  # geometric means of the rounds
    theirs_value: float
    mde_pct: float | None  # the smallest change the rounds find with 80% power, in %


Round = Mapping[str, Any]  # {metric: {cell id: value}, "errors": {cell id: count}, ...} (run.finalists.load_round)


def paired_values(rounds: Sequence[Round], plan: PairPlan) -> list[tuple[float, float]]:
    """(mine, theirs) of every round where both answered every request of their window."""
    found = []
    for r in rounds:
        values, errors = r.get(plan.metric, {}), r.get("errors", {})
        a, b = values.get(plan.mine, 0.0), values.get(plan.theirs, 0.0)
        if a > 0 and b > 0 and not errors.get(plan.mine) and not errors.get(plan.theirs):
            found.append((a, b))
    return found


def paired_ratio(plan: PairPlan, rounds: Sequence[Round], comparisons: int = 1) -> PairRatio | None:
    """The pair's ratio from its rounds, with a Student-t interval (few rounds); None under 2 rounds."""
    pairs = paired_values(rounds, plan)
    if len(pairs) < 2:
        return None
    diffs = [math.log(a / b) for a, b in pairs]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    t = t_quantile(1 - FAMILY_ALPHA / (2 * max(1, comparisons)), len(diffs) - 1)
    mde = 100 * (1 - math.exp(-(t + z_power()) * se)) if se > 0 else 0.0
    geo = [math.exp(statistics.fmean(math.log(p[i]) for p in pairs)) for i in (0, 1)]
    return PairRatio(plan, math.exp(mean), math.exp(mean - t * se), math.exp(mean + t * se), len(pairs),
                     geo[0], geo[1], mde)


def decided(pair: PairRatio, target: float) -> bool:
    """The interval lies wholly on one side of `target`: more rounds would not change the answer."""
    return pair.low > target or pair.high < target


def judged_on_rounds(pairs: Sequence[PairRatio], target: float, at_least: bool = True) -> tuple[bool | None, bool]:
    """Every pair must reach `target` (at least, or at most): (met, undecided). Met when every pair's
    interval from its interleaved rounds lies on the target's good side, missed when one lies wholly
    on its bad side, undecided otherwise."""
    good = [(p.low >= target) if at_least else (p.high <= target) for p in pairs]
    bad = [(p.high < target) if at_least else (p.low > target) for p in pairs]
    if any(bad):
        return False, False
    return (True, False) if all(good) else (None, True)


def rounds_text(p: PairRatio, unit: str, fmt: str = "{:.0f}") -> str:
    """What a goal says of a pair measured in rounds."""
    return (f"{p.plan.about}: {_cell_label(p.plan.mine)} {fmt.format(p.mine_value)} {unit} vs "
            f"{_cell_label(p.plan.theirs)} {fmt.format(p.theirs_value)} {unit}, {p.ratio:.2f}x "
            f"({p.low:.2f}-{p.high:.2f}) over {p.rounds} interleaved rounds")


def _cell_label(cell_id: str) -> str:
    """strategy/server/wN of a cell id (the rest is the goal's own: model, device, steady)."""
    return "/".join(cell_id.split("/")[:3])


def plans_of(data: Mapping[str, Any] | None) -> list[tuple[PairPlan, list[Round]]]:
    """The pairs of a run's goal_rounds.json, each with its rounds ([] when the run had none)."""
    if not data:
        return []
    try:
        return [(PairPlan(**p["plan"]), list(p["rounds"])) for p in data["pairs"]]
    except (KeyError, TypeError) as exc:
        raise RecordError(f"goal rounds: expected pairs with a plan and rounds ({exc})") from None


def measured_pairs(data: Mapping[str, Any] | None) -> tuple[PairRatio, ...]:
    """Every pair of a run's goal rounds with its ratio, the interval family-wise over its goal's pairs."""
    plans = plans_of(data)
    per_goal: dict[int, int] = {}
    for plan, _ in plans:
        per_goal[plan.goal] = per_goal.get(plan.goal, 0) + 1
    found = (paired_ratio(plan, rounds, per_goal[plan.goal]) for plan, rounds in plans)
    return tuple(p for p in found if p is not None)



def load_goal_rounds(path: Path) -> dict[str, Any] | None:
    """A run's goal_rounds.json, or None when the run measured no goal pair interleaved."""
    return load_stage_file(path, "pairs")
