"""Readiness against what the deployment answered (matrix.run.readiness), and the rule that fails
a cell on it (matrix.verdicts.judge_readiness): pure, on polls and tries as a cell records them."""

from __future__ import annotations

from forkwise.matrix import verdicts
from forkwise.matrix.records.lifecycle import BootReadiness, WindowReadiness
from forkwise.matrix.records.types import Verdict
from forkwise.matrix.run.readiness import BOOT_RESOLUTION_S, NO_ANSWER, NOT_READY, READY, boot_truth, window_truth

T0 = 100.0  # launch, monotonic


def polls(*spans: tuple[float, float, str], every: float = 0.1) -> list[tuple[float, str]]:
    """What the probe said: (from, to, what) after launch, every `every` seconds."""
    found = []
    for start, end, said in spans:
        t = start
        while t < end - 1e-9:
            found.append((T0 + t, said))
            t += every
    return found


def test_ready_before_a_request_could_be_answered_is_ready_early_by_the_last_failed_try():
    said = polls((0.0, 0.3, NO_ANSWER), (0.3, 5.0, READY))
    tries = [(0.4, 0.45, False), (0.7, 0.75, False), (2.9, 2.95, False), (3.1, 3.15, True)]
    assert boot_truth(said, T0, tries) == BootReadiness(len(said), 0.3, 2.6, 0.0)


def test_answered_before_ready_is_ready_late_and_never_ready_lasts_to_the_last_poll():
    said = polls((0.0, 1.0, NOT_READY), (1.0, 2.0, READY))
    assert boot_truth(said, T0, [(0.1, 0.2, True)]).ready_late_s == 0.8
    # A first request that loaded the runtime for 3 s answered at 3.1: it said ready before that, not late.
    assert boot_truth(polls((0.0, 3.0, NOT_READY), (3.0, 4.0, READY)), T0, [(0.1, 3.1, True)]).ready_late_s == 0.0
    never = boot_truth(polls((0.0, 3.0, NOT_READY)), T0, [(0.4, 0.5, True)])
    assert never.ready_after_s is None and abs(never.ready_late_s - 2.4) < 1e-9
    # Tries that failed before it said ready are the deployment warming, not a lie.
    honest = boot_truth(polls((0.0, 1.0, NOT_READY), (1.0, 2.0, READY)), T0, [(0.3, 0.35, False), (1.2, 1.25, True)])
    assert honest.ready_early_s == 0.0 and honest.ready_late_s == 0.0


def test_a_window_counts_intervals_where_the_probe_said_the_opposite_of_what_the_load_got():
    rates = [100.0] * 4 + [0.0] * 4 + [100.0] * 4  # 3 s: serving, a second with no 200, serving again
    said = polls((0.0, 1.0, READY), (1.0, 2.0, READY), (2.0, 2.5, NOT_READY), (2.5, 3.0, READY))
    truth = window_truth(said, T0, 0.25, rates)
    assert truth.ready_while_failing_s == 1.0 and truth.not_ready_while_serving_s == 0.5
    assert truth.longest_lie_s == 1.5 and truth.polls == len(said)  # the two lies follow each other
    honest = polls((0.0, 1.0, READY), (1.0, 2.0, NOT_READY), (2.0, 3.0, READY))
    assert window_truth(honest, T0, 0.25, rates).longest_lie_s == 0.0


def test_the_rule_fails_a_lie_longer_than_the_probes_resolve_at_boot_or_than_a_recovery_takes():
    ok = verdicts.judge_readiness(BootReadiness(20, 0.3, BOOT_RESOLUTION_S, 0.0), None, BOOT_RESOLUTION_S, 2.5)
    assert ok.verdict is Verdict.OK
    early = verdicts.judge_readiness(BootReadiness(20, 0.3, 2.6, 0.0), None, BOOT_RESOLUTION_S, 2.5)
    assert early.verdict is Verdict.ERROR and "2.60 s before" in early.findings[0]
    late = verdicts.judge_readiness(BootReadiness(20, 3.0, 0.0, 2.6), None, BOOT_RESOLUTION_S, 2.5)
    assert late.verdict is Verdict.ERROR
    window = WindowReadiness(90, 3.0, 0.0, 3.0)
    assert verdicts.judge_readiness(None, window, BOOT_RESOLUTION_S, 2.5).verdict is Verdict.ERROR
    assert verdicts.judge_readiness(None, window, BOOT_RESOLUTION_S, 3.5).verdict is Verdict.OK
