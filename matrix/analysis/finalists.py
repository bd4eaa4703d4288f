"""The finalists: which cells could be the best, and, from rounds measured interleaved, how they rank.

Independent launches minutes apart cannot tell close cells apart on a host whose speed drifts
(the same cell varies 14-21% from launch to launch, whatever a level's length). So after the
matrix's passes, per question (model, device, backend), the cells that could be the best within
the budgets at a declared concurrency are measured again, side by side, in rounds: each round
loads every finalist for a short window in a random order (the randomized multiple interleaved
trials of Abedi and Brecht, ICPE 2017). The comparison is paired: each finalist against the
round's best within the same round, so the host's drift falls on all of them alike.

Everything here is pure: observations in, a ranking out. ``run.finalists`` takes the rounds,
``publish.finalists_report`` shows them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from forkwise.matrix.analysis.recommend import Served, candidates, contenders
from forkwise.matrix.analysis.significance import FAMILY_ALPHA, z_power
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.types import CellRecord, LoadLevel

BEST, BEHIND, TIED, UNDECIDED = "best", "behind", "tied within the MDE", "undecided"


# --- choosing the finalists ---------------------------------------------------------------------


def finalists(records: Sequence[CellRecord], budgets: Budgets, what: Served, concurrency: int,
              max_cells: int) -> list[CellRecord]:
    """The cells serving `what` that could be the best at `concurrency` (a load declared before
    measuring): within the memory budget, their p99 there within the p99 budget, and not clearly
    behind another by the passes' own noise; the `max_cells` with the most throughput."""
    points = candidates(records, budgets, what, choose=at_concurrency(concurrency)).points
    return [p.record for p in contenders(points)[:max_cells]]


def at_concurrency(concurrency: int) -> Callable[[CellRecord, Budgets], LoadLevel | None]:
    """A cell's level at `concurrency`, when its p99 there is within the budget."""
    def choose(record: CellRecord, budgets: Budgets) -> LoadLevel | None:
        level = next((lv for lv in record.load if lv.concurrency == concurrency and lv.rps > 0), None)
        return level if level is not None and level.latency.p99_ms <= budgets.p99_ms else None

    return choose


# --- ranking them from the rounds ---------------------------------------------------------------


Round = Mapping[str, float]  # cell id -> requests a second in that round's window (0: it failed)


@dataclass(frozen=True)
class Standing:
    """One finalist against the best, paired within rounds."""

    cell_id: str
    ratio: float  # geometric mean of (this / best) over the rounds both were measured in
    low: float  # the ratio's confidence interval (family-wise FAMILY_ALPHA over the finalists)
    high: float
    mde_pct: float | None  # the smallest difference from the best found with POWER, in %
    rounds: int
    verdict: str  # BEST, BEHIND, TIED, UNDECIDED


@dataclass(frozen=True)
class Ranking:
    best: str
    standings: tuple[Standing, ...]  # the best first, then by ratio
    rounds: int
    target_mde_pct: float

    @property
    def decided(self) -> bool:
        return all(s.verdict != UNDECIDED for s in self.standings)

    @property
    def top_set(self) -> tuple[str, ...]:
        """The best and every finalist tied with it within the MDE (or not yet told apart)."""
        return tuple(s.cell_id for s in self.standings if s.verdict != BEHIND)

    def rounds_for(self, mde_pct: float) -> int | None:
        """About how many rounds would find a difference of `mde_pct` with POWER between the best and
        the finalist nearest it (the pair the answer turns on; one dropped as behind has fewer rounds)."""
        nearest = next((s for s in self.standings[1:] if s.mde_pct), None)
        if nearest is None or nearest.mde_pct is None or nearest.rounds == 0:
            return None
        return math.ceil(nearest.rounds * (nearest.mde_pct / mde_pct) ** 2)


def log_ratios(rounds: Sequence[Round], cell: str, best: str) -> list[float]:
    """log(cell / best) in every round where both served."""
    return [math.log(r[cell] / r[best]) for r in rounds if r.get(cell, 0) > 0 and r.get(best, 0) > 0]


def geometric_mean(rounds: Sequence[Round], cell: str) -> float:
    values = [r[cell] for r in rounds if r.get(cell, 0) > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else 0.0


def rank(rounds: Sequence[Round], target_mde_pct: float, alpha: float = FAMILY_ALPHA) -> Ranking:
    """Each finalist against the one with the highest geometric mean, paired by round."""
    cells = sorted({c for r in rounds for c in r})
    best = max(cells, key=lambda c: (geometric_mean(rounds, c), c))
    comparisons = max(1, len(cells) - 1)
    z = NormalDist().inv_cdf(1 - alpha / (2 * comparisons))
    standings = [Standing(best, 1.0, 1.0, 1.0, None, len(log_ratios(rounds, best, best)), BEST)]
    for cell in cells:
        if cell != best:
            standings.append(_standing(cell, log_ratios(rounds, cell, best), z, target_mde_pct))
    standings[1:] = sorted(standings[1:], key=lambda s: (-s.ratio, s.cell_id))
    return Ranking(best, tuple(standings), len(rounds), target_mde_pct)


def _standing(cell: str, diffs: list[float], z: float, target_mde_pct: float) -> Standing:
    if len(diffs) < 2:
        return Standing(cell, math.exp(diffs[0]) if diffs else 0.0, 0.0, math.inf, None, len(diffs), UNDECIDED)
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    low, high = mean - z * se, mean + z * se
    mde = 100 * (1 - math.exp(-(z + z_power()) * se))
    if high < 0:
        verdict = BEHIND
    elif low > math.log(1 - target_mde_pct / 100) and mde <= target_mde_pct:
        verdict = TIED  # within the target of the best, and the rounds could have seen a target's difference
    else:
        verdict = UNDECIDED
    return Standing(cell, math.exp(mean), math.exp(low), math.exp(high), mde, len(diffs), verdict)


# --- two runs' answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswersAgree:
    """One question's answer in two runs: each run's best and top set (the best and every finalist
    not behind it); they agree when each run's best is in the other's top set."""

    served: str
    best_a: str
    top_a: tuple[str, ...]
    best_b: str
    top_b: tuple[str, ...]

    @property
    def agree(self) -> bool:
        return self.best_a in self.top_b and self.best_b in self.top_a


def ranked(data: Mapping) -> dict[str, Ranking]:
    """Each question of a run's finalists.json that has two rounds or more, ranked from its rounds."""
    return {q["served"]: rank([r["rps"] for r in q["rounds"]], data["target_mde_pct"])
            for q in data["questions"] if len(q["rounds"]) >= 2}


def answers_agree(a: Mapping | None, b: Mapping | None) -> tuple[AnswersAgree, ...]:
    """The questions both runs' finalists ranked (finalists.json of each), in a's order."""
    if not a or not b:
        return ()
    in_a, in_b = ranked(a), ranked(b)
    return tuple(AnswersAgree(served, in_a[served].best, in_a[served].top_set, in_b[served].best, in_b[served].top_set)
                 for served in in_a if served in in_b)
