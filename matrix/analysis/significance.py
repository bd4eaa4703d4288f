"""The statistics of a comparison of two runs: tests, the family-wise error, and what a run's own
passes say about noise that many cells share.

Everything is on a log scale: a difference of logs is a relative change, and a change that hits a
run as a whole is a common factor. A run measures each cell in ``passes`` (launch 1 of every cell,
then launch 2 of every cell, ...: forkwise.matrix.analysis.launches); besides each launch's own noise
(``launches.pooled_relative_spread``), two things move many cells at once, and both are measured
here from the run itself:

- the pass drift: the machine as a whole runs faster or slower in one pass than in another (the
  median over cells of each launch's deviation from its cell's mean). Two runs differ by such a
  drift too, so it is the noise that a run shift is judged against;
- the strategy effect: the cells of one strategy, measured one after the other, move together
  within a pass beyond the whole pass's drift. It does not average out over a strategy's cells,
  so a test of a strategy as a whole carries it in full.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

FAMILY_ALPHA = 0.05  # chance that anything at all is flagged when nothing changed
MIN_CELLS = 3  # cells needed at a key to measure a pass's drift there

Sample = Sequence[float | None]  # one value per launch, in pass order; None: that launch has none
SampleKey = tuple[str, int | None]  # (cell_id, concurrency or None)


def p_value(z: float) -> float:
    """Two-sided, under a normal distribution."""
    return math.erfc(abs(z) / math.sqrt(2))


def holm(p_values: list[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Holm's step-down method: which of the hypotheses to reject, family-wise error <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


POWER = 0.8  # a minimum detectable effect is the change a test finds this often


def z_power(power: float = POWER) -> float:
    """How many standard errors past its critical value a change must lie to be found with `power`."""
    return NormalDist().inv_cdf(power)


def critical_z(alpha: float, tests: int) -> float:
    """The |z| a test must reach to be flagged when it is the only change among ``tests`` (Holm's
    first step, two-sided)."""
    return NormalDist().inv_cdf(1 - alpha / (2 * max(1, tests)))


def subset_critical_z(comparisons: int, alpha: float = FAMILY_ALPHA) -> float:
    """The z one value must be ahead of another by, in standard errors of their difference, to be told
    apart from it when it is one of ``comparisons`` one-sided comparisons (Bonferroni; 0 when there are
    none): the rule of a subset selection (Gupta), which keeps every value not clearly behind another."""
    return NormalDist().inv_cdf(1 - alpha / comparisons) if comparisons > 0 else 0.0


def clearly_ahead(a: float, se_a: float, b: float, se_b: float, z: float) -> bool:
    """Is a ahead of b by more than z standard errors of their difference? Never when neither has a
    measured spread: nothing then says how far apart chance puts them."""
    se = math.hypot(se_a, se_b)
    return se > 0 and a - b > z * se


def worsening_pct(log_change: float, higher_is_better: bool) -> float:
    """A change of ``log_change`` (log b / a) as the relative worsening it stands for, in percent: a
    slowdown of a throughput, a growth of a latency or a size (negative: an improvement)."""
    return (1 - math.exp(log_change) if higher_is_better else math.exp(log_change) - 1) * 100


def log_mean(sample: Sample) -> float | None:
    present = [v for v in sample if v is not None and v > 0]
    return math.log(statistics.fmean(present)) if present else None


def launches_in(sample: Sample) -> int:
    return sum(1 for v in sample if v is not None and v > 0)


TAIL_QUANTILE = 0.95  # a heavy-tailed measure's spread is fitted to this quantile, not to its variance


def tail_spread(samples: Mapping[SampleKey, Sample]) -> float | None:
    """The stdev a normal launch-to-launch noise would need for its TAIL_QUANTILE to match the run's
    own: over every pair of consecutive launches of a cell, |log(l2 / l1)| at that quantile, over the
    quantile of |N(0, 2)|. For a measure whose launches now and then meet a stall (a short window's
    p99), the variance describes the common launch and misses the tail that a test meets."""
    gaps = sorted(abs(math.log(y / x)) for sample in samples.values()
                  for x, y in itertools.pairwise(sample) if x and y and x > 0 and y > 0)
    if len(gaps) < 2 * MIN_CELLS:
        return None
    at = gaps[min(len(gaps) - 1, math.ceil(TAIL_QUANTILE * len(gaps)) - 1)]
    return at / (NormalDist().inv_cdf(0.5 + TAIL_QUANTILE / 2) * math.sqrt(2))


@dataclass(frozen=True)
class PassNoise:
    """What a run's passes say about noise common to many cells (log scale, stdevs)."""

    passes: int = 1  # the fewest passes any key (concurrency) was measured in, when two or more
    drift: float | None = None  # of one pass's whole-run effect; None: one pass, not measured
    strategy: float | None = None  # of one strategy's effect within a pass; None: not measurable


def _devs(samples: Mapping[str, Sample]) -> dict[str, list[float | None]]:
    """Per cell with two or more launches: each launch's log deviation from the cell's log mean."""
    devs = {}
    for cell, sample in samples.items():
        if launches_in(sample) < 2:
            continue
        logs = [math.log(v) if v is not None and v > 0 else None for v in sample]
        centre = statistics.fmean(x for x in logs if x is not None)
        devs[cell] = [None if x is None else x - centre for x in logs]
    return devs


def _pass_effects(devs: Mapping[str, list[float | None]]) -> list[float] | None:
    """Per pass: the median deviation of every cell's launch in it, centred; None: too few cells."""
    passes = max(len(d) for d in devs.values())
    medians = []
    for p in range(passes):
        at = [x for d in devs.values() for x in d[p:p + 1] if x is not None]
        if len(at) < MIN_CELLS:
            return None
        medians.append(statistics.median(at))
    centre = statistics.fmean(medians)
    return [m - centre for m in medians]


def pass_noise(samples: Mapping[SampleKey, Sample], strategy_of: Callable[[str], str]) -> PassNoise:
    """The pass drift and the strategy effect of one run, pooled over every key (concurrency)."""
    by_key: dict[Hashable, dict[str, Sample]] = {}
    for (cell, key), sample in samples.items():
        by_key.setdefault(key, {})[cell] = sample
    drifts, strategy_num, strategy_den, passes = [], 0.0, 0.0, []
    for cells in by_key.values():
        devs = _devs(cells)
        effects = _pass_effects(devs) if devs else None
        if effects is None or len(effects) < 2:
            continue
        passes.append(len(effects))
        drifts.append(sum(e * e for e in effects) / (len(effects) - 1))
        num, den = _strategy_moments(devs, effects, strategy_of)
        strategy_num, strategy_den = strategy_num + num, strategy_den + den
    if not drifts:
        return PassNoise()
    strategy = math.sqrt(max(0.0, strategy_num / strategy_den)) if strategy_den else None
    return PassNoise(passes=min(passes), drift=math.sqrt(statistics.fmean(drifts)), strategy=strategy)


def _strategy_moments(devs: Mapping[str, list[float | None]], effects: list[float],
                      strategy_of: Callable[[str], str]) -> tuple[float, float]:
    """Method of moments for the strategy effect's variance t at one key: with residuals r (a
    launch's deviation less its pass's effect, variance s = t + e), the mean of a strategy's k
    residuals in one pass of n has E[m^2] n / (n - 1) = t (1 - 1/k) + s / k."""
    residuals = {c: [None if x is None else x - effects[p] for p, x in enumerate(d)] for c, d in devs.items()}
    squares = [x * x for r in residuals.values() for x in r if x is not None]
    dof = sum(sum(1 for x in r if x is not None) - 1 for r in residuals.values())
    s = sum(squares) / dof
    n = len(effects)
    by_strategy: dict[str, list[list[float | None]]] = {}
    for cell, r in residuals.items():
        by_strategy.setdefault(strategy_of(cell), []).append(r)
    num = den = 0.0
    for rows in by_strategy.values():
        for p in range(n):
            at = [x for r in rows for x in r[p:p + 1] if x is not None]
            if len(at) >= 2:
                k = len(at)
                num += statistics.fmean(at) ** 2 * n / (n - 1) - s / k
                den += 1 - 1 / k
    return num, den


@dataclass(frozen=True)
class ShiftEstimate:
    """How run b as a whole differs from run a: the median log ratio over every matched level."""

    log_shift: float
    levels: int
    median_se: float  # of the median itself: what judging a level or a strategy beyond the shift adds
    se: float | None  # of the shift as a test of "the runs differ as a whole": the median's error plus
    # the pass drifts; None: neither run measured its pass drift, the shift cannot be tested


def estimate_shift(log_ratios: Sequence[float], noise: tuple[PassNoise, PassNoise]) -> ShiftEstimate:
    """The shift, and its standard error: the median's own (from the ratios' robust spread) plus the
    drift between passes that each run measured (a run's mean carries its passes' drifts / passes).
    A run that did not measure its drift borrows the other's."""
    centre = statistics.median(log_ratios)
    robust_sd = 1.4826 * statistics.median(abs(x - centre) for x in log_ratios)
    median_var = math.pi / 2 * robust_sd**2 / len(log_ratios)
    drifts = [n for n in noise if n.drift is not None]
    if not drifts:
        return ShiftEstimate(centre, len(log_ratios), math.sqrt(median_var), None)
    a, b = (n if n.drift is not None else drifts[0] for n in noise)
    assert a.drift is not None and b.drift is not None  # each has its own drift or the other's
    var = median_var + a.drift**2 / a.passes + b.drift**2 / b.passes
    return ShiftEstimate(centre, len(log_ratios), math.sqrt(median_var), math.sqrt(var))
