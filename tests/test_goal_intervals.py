"""A ratio goal judged over several cells (forkwise.matrix.analysis.goals) is met, missed or undecided by
the intervals of the cells' ratios, never by the largest of many noisy ratios."""

from __future__ import annotations

from pathlib import Path

from forkwise.matrix.analysis.compare_runs import load_run
from forkwise.matrix.analysis.goals import RatioPair, goal_ceiling, judged_pairs
from forkwise.matrix.analysis.launches import combine_all

RECORDED = Path(__file__).resolve().parent / "fixtures" / "default-runs" / "run-a"


def pair(ratio: float, low: float, high: float) -> RatioPair:
    return RatioPair(ratio, low, high, None, None, 0.0, 0.0)  # type: ignore[arg-type]


def test_met_when_one_interval_lies_above_the_target():
    shown, met, undecided = judged_pairs([pair(0.7, 0.6, 0.8), pair(0.9, 0.82, 0.98)], 0.8)
    assert (met, undecided, shown.ratio) == (True, False, 0.9)


def test_missed_when_every_interval_lies_below():
    shown, met, undecided = judged_pairs([pair(0.6, 0.5, 0.7), pair(0.7, 0.65, 0.75)], 0.8)
    assert (met, undecided, shown.ratio) == (False, False, 0.7)


def test_the_largest_noisy_ratio_alone_decides_nothing():
    # The largest ratio is above the target, but its interval holds the target: undecided, not met.
    shown, met, undecided = judged_pairs([pair(0.85, 0.7, 1.0), pair(0.75, 0.65, 0.86)], 0.8)
    assert (met, undecided, shown.ratio) == (None, True, 0.85)


def test_the_ceiling_goal_on_recorded_runs_says_its_interval_and_how_many_cells():
    goal = goal_ceiling(combine_all(load_run(RECORDED)))
    assert goal.interval is not None and goal.interval[0] <= goal.ratio <= goal.interval[1]
    assert "cells judged" in goal.measured and goal.result in ("met", "missed", "undecided")
