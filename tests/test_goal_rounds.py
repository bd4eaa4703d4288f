"""The ratio goals judged on pairs measured interleaved (analysis.goal_pairs, analysis.paired,
run.goal_rounds): which pair each goal turns on, the paired ratio on a drifting host, the goals'
met / missed / undecided from the rounds, the report's table, and the stage on real deployments."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from forkwise.errors import RecordError
from forkwise.matrix.analysis import goals
from forkwise.matrix.analysis.compare_runs import load_run
from forkwise.matrix.analysis.controls import control_for
from forkwise.matrix.analysis.goal_pairs import goal_pairs
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.paired import PairPlan, judged_on_rounds, load_goal_rounds, measured_pairs, paired_ratio
from forkwise.matrix.publish.document import render_markdown
from forkwise.matrix.publish.goals_report import pairs_blocks

RECORDED = Path(__file__).resolve().parent / "fixtures" / "default-runs" / "run-a"
PLAN = PairPlan(2, "a", "b", 32, "rps", "large model")


def drifting_rounds(n: int, mine: float, theirs: float, seed: int = 4, drift: float = 0.25,
                    window_noise: float = 0.03) -> list[dict]:
    """Rounds on a host whose speed wanders by `drift` from round to round (as launches minutes apart
    do here, 14-21%): the drift falls on both cells of a round alike."""
    rng = random.Random(seed)
    rounds = []
    for _ in range(n):
        host = math.exp(rng.gauss(0, drift))
        values = {c: v * host * math.exp(rng.gauss(0, window_noise)) for c, v in (("a", mine), ("b", theirs))}
        rounds.append({"rps": values, "errors": {"a": 0, "b": 0}})
    return rounds


def test_the_paired_ratio_cancels_the_hosts_drift():
    """25% drift a round, 3% window noise: 12 rounds put 2.5x within a few percent, the interval
    holding the truth and excluding 3.0; the MDE follows the window noise, not the drift."""
    pair = paired_ratio(PLAN, drifting_rounds(12, 250.0, 100.0))
    assert pair is not None and pair.rounds == 12
    assert pair.low < 2.5 < pair.high and pair.high < 3.0 and abs(pair.ratio - 2.5) < 0.1
    assert pair.mde_pct is not None and pair.mde_pct < 10


def test_a_round_with_an_error_or_a_missing_cell_is_left_out_and_two_rounds_are_needed():
    rounds = drifting_rounds(4, 200.0, 100.0)
    rounds[0]["errors"]["a"] = 3
    rounds[1]["rps"].pop("b")
    assert paired_ratio(PLAN, rounds).rounds == 2
    assert paired_ratio(PLAN, rounds[:3]) is None


def _pair(low: float, high: float, goal: int = 2):
    pair = paired_ratio(PairPlan(goal, "a", "b", 32, "rps", "x"), drifting_rounds(6, 2.0, 1.0))
    import dataclasses
    return dataclasses.replace(pair, low=low, high=high, ratio=(low * high) ** 0.5)


@pytest.mark.parametrize("intervals, at_least, expected", [
    ([(3.1, 3.6), (3.2, 4.0)], True, (True, False)),  # every pair above: met
    ([(3.1, 3.6), (2.0, 2.5)], True, (False, False)),  # one wholly below: missed
    ([(3.1, 3.6), (2.8, 3.4)], True, (None, True)),  # one straddles: undecided
    ([(0.95, 1.05)], False, (True, False)),  # at most 1.1: met
    ([(1.15, 1.4)], False, (False, False)),
    ([(1.0, 1.2)], False, (None, True)),
])
def test_a_goal_on_rounds_needs_every_pair_on_the_good_side_of_the_target(intervals, at_least, expected):
    pairs = [_pair(lo, hi) for lo, hi in intervals]
    assert judged_on_rounds(pairs, 3.0 if at_least else 1.1, at_least) == expected


def test_each_goal_turns_on_the_pair_its_passes_choose():
    records = combine_all(load_run(RECORDED))
    by_id = {r.cell_id: r for r in records}
    plans = {p.goal: p for p in goal_pairs(records)}
    ceiling, batching, tax = plans[1], plans[2], plans[3]
    assert control_for(by_id[ceiling.mine], records).cell_id == ceiling.theirs and ceiling.concurrency == 32
    assert by_id[ceiling.mine].model == "default" and ceiling.metric == "rps"
    mine, lazy = by_id[batching.mine], by_id[batching.theirs]
    assert (mine.strategy, lazy.strategy, mine.model, mine.server) == ("child-process-batched", "lazy", "large",
                                                                        lazy.server)
    assert tax.concurrency == 1 and tax.metric == "p50_ms" and by_id[tax.theirs].strategy == "child-process"
    # A finalists' best is goal 1's pair even where the passes put another cell ahead.
    other = next(r for r in records if r.model == "default" and r.strategy == "lazy" and r.verdict.ok)
    assert {p.goal: p for p in goal_pairs(records, {other.cell_id})}[1].mine == other.cell_id


def _rounds_file(records, ratios: dict[int, float]) -> dict:
    """goal_rounds.json with every pair of the run measured at the given ratio (mine / theirs)."""
    pairs = []
    for plan in goal_pairs(records):
        rounds = drifting_rounds(10, ratios[plan.goal], 1.0, seed=plan.goal)
        for r in rounds:
            r[plan.metric] = {plan.mine: r["rps"]["a"], plan.theirs: r["rps"]["b"]}
            r["errors"] = {plan.mine: 0, plan.theirs: 0}
        pairs.append({"plan": vars(plan), "rounds": rounds, "stopped": "rounds spent"})
    return {"seed": 1, "pairs": pairs}


def test_the_goals_are_judged_on_the_rounds_where_the_run_measured_them():
    records = combine_all(load_run(RECORDED))
    data = _rounds_file(records, {1: 0.7, 2: 4.0, 3: 1.0})
    judged = {g.number: g for g in goals.evaluate(records, {}, measured_pairs(data))}
    assert judged[1].met is False and "interleaved rounds" in judged[1].measured  # 0.7 of the control
    assert judged[2].met is True and judged[2].interval[0] >= goals.BATCHING  # 4x lazy
    assert "the path's ceiling: its control" in judged[2].measured
    assert "CPU a request at c32: path" in judged[2].measured
    assert judged[3].met is True and judged[3].interval[1] <= goals.WINDOW_TAX  # no window tax
    assert all(len(judged[n].cells) == 2 for n in (1, 2, 3))  # both cells, for the profiles of a miss
    # Without rounds, the same records are judged on the passes and say so.
    assert "passes only" in {g.number: g for g in goals.evaluate(records, {})}[1].measured


def test_the_report_tables_each_pair_and_says_when_the_run_had_none(tmp_path):
    records = combine_all(load_run(RECORDED))
    data = _rounds_file(records, {1: 0.7, 2: 4.0, 3: 1.0})
    text = render_markdown(pairs_blocks(data))
    assert "| 2 | large model |" in text and "rounds spent" in text and text.count("\n| ") >= 4
    assert "judged on the passes alone" in render_markdown(pairs_blocks(None))
    (tmp_path / "goal_rounds.json").write_text(json.dumps(data))
    assert load_goal_rounds(tmp_path / "goal_rounds.json") == data
    (tmp_path / "goal_rounds.json").write_text("[1, 2]")
    with pytest.raises(RecordError, match="list of pairs"):
        load_goal_rounds(tmp_path / "goal_rounds.json")
    assert load_goal_rounds(tmp_path / "missing.json") is None


@pytest.mark.integration
def test_the_stage_loads_a_real_pair_in_rounds_and_stops_both(home, tiny_spec_path, tmp_path, monkeypatch):
    """Two real deployments of the tiny model (lazy and its control), booted together, loaded in a
    random order each round; nothing of them is left once the stage returns."""
    from forkwise.matrix.run import goal_rounds
    from owned import TAG_VAR, new_tag, server_processes
    from test_finalists import profile_and_records

    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    profile, records = profile_and_records(
        tmp_path, '[axes]\nstrategy = ["control", "lazy"]\nserver = ["gunicorn-sync"]\nmodel = ["tiny"]\n'
        '[load]\nlevels = [4]\n[goals]\nrounds = 3\nmin_rounds = 3\nwindow_s = 0.5\nwarmup_s = 0.2\n')
    lazy, control = sorted(records, key=lambda r: r.strategy != "lazy")
    plan = PairPlan(1, lazy.cell_id, control.cell_id, 4, "rps", "tiny model")
    rounds, stopped = goal_rounds._measure(plan, [lazy, control], profile, home, random.Random(3))
    assert len(rounds) == 3 and stopped.startswith(("decided", "rounds spent"))
    assert all(min(r[plan.metric].values()) > 0 and not any(r["errors"].values()) for r in rounds)
    assert paired_ratio(plan, rounds) is not None
    assert server_processes(tag) == []


def test_goal_1_states_the_ceiling_cpu_allows_from_the_controls_cpu_and_the_models_call():
    """The control's CPU per request at c32 against the in-process call of the micro-benchmark: a
    strategy that calls the model once a request cannot beat path / (path + call) of its control."""
    records = combine_all(load_run(RECORDED))
    data = _rounds_file(records, {1: 0.7, 2: 4.0, 3: 1.0})
    plan = next(p for p in goal_pairs(records) if p.goal == 1)
    level = next(lv for r in records if r.cell_id == plan.theirs for lv in r.load if lv.concurrency == 32)
    path_ms = 1000 * level.server_cpu_s / level.requests
    bench = {goals.OVERHEAD_BENCH: {"in_process_us": 1000 * path_ms}}  # a call as costly as the path: 0.50x
    ceiling = goals.evaluate(records, bench, measured_pairs(data))[0]
    assert "at most 0.50x, below the target" in ceiling.measured
    assert "CPU's ceiling" not in goals.evaluate(records, {}, measured_pairs(data))[0].measured
