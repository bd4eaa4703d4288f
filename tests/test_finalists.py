"""The finalists: which cells could be the best, and their ranking from rounds measured interleaved
(forkwise.matrix.analysis.finalists), on rounds with a host that drifts as this one does (pure: no
servers), and the report's section of them."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from forkwise.matrix.analysis import finalists as analysis
from forkwise.matrix.analysis.compare_runs import load_run
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.recommend import questions
from forkwise.matrix.publish.document import render_markdown
from forkwise.matrix.publish.finalists_report import finalists_section
from forkwise.matrix.records.budgets import Budgets

RECORDED = Path(__file__).resolve().parent / "fixtures" / "default-runs" / "run-a"
# Four finalists' true rates: the best, one 1% behind (a tie at 5%), one 8% and one 15% behind.
TRUE_RPS = {"a/best": 600.0, "b/close": 594.0, "c/eight": 552.0, "d/fifteen": 510.0}


def drifting_rounds(n: int, true_rps: dict[str, float], seed: int = 3, drift: float = 0.25,
                    window_noise: float = 0.03) -> list[dict[str, float]]:
    """Rounds on a host whose speed wanders by `drift` (as launches minutes apart here do, 14-21%)
    from round to round, each window with its own `window_noise`: the drift falls on every finalist
    of a round alike."""
    rng = random.Random(seed)
    rounds = []
    for _ in range(n):
        host = math.exp(rng.gauss(0, drift))
        rounds.append({cell: rps * host * math.exp(rng.gauss(0, window_noise)) for cell, rps in true_rps.items()})
    return rounds


def test_interleaved_rounds_rank_close_cells_that_launches_cannot():
    ranking = analysis.rank(drifting_rounds(30, TRUE_RPS), target_mde_pct=5.0)
    verdicts = {s.cell_id: s.verdict for s in ranking.standings}
    assert ranking.best == "a/best" and verdicts["a/best"] == analysis.BEST
    assert verdicts["c/eight"] == analysis.BEHIND and verdicts["d/fifteen"] == analysis.BEHIND
    assert verdicts["b/close"] == analysis.TIED and ranking.top_set == ("a/best", "b/close")
    assert ranking.decided
    # The paired MDE at 80% power is a few percent though the host drifts 25% between rounds.
    assert all(s.mde_pct is not None and s.mde_pct < 5.0 for s in ranking.standings[1:])
    eight = next(s for s in ranking.standings if s.cell_id == "c/eight")
    assert eight.low < 0.92 < eight.high


def test_a_planted_5_percent_slowdown_of_one_finalist_is_flagged_as_that_finalist_only():
    rounds = drifting_rounds(30, {"a/best": 600.0, "b/twin": 600.0, "c/twin": 600.0})
    unchanged = analysis.rank(rounds, target_mde_pct=5.0)
    assert all(s.verdict in (analysis.BEST, analysis.TIED) for s in unchanged.standings)  # nothing flagged
    planted = [{**r, "c/twin": r["c/twin"] * 0.95} for r in rounds]
    ranking = analysis.rank(planted, target_mde_pct=5.0)
    behind = [s.cell_id for s in ranking.standings if s.verdict == analysis.BEHIND]
    assert behind == ["c/twin"]


def test_too_few_rounds_are_undecided_and_say_how_many_would_do():
    ranking = analysis.rank(drifting_rounds(3, TRUE_RPS, window_noise=0.06), target_mde_pct=2.0)
    assert not ranking.decided
    needed = ranking.rounds_for(2.0)
    assert needed is not None and needed > 3


def test_a_round_where_a_finalist_failed_is_left_out_of_its_pairs():
    rounds = drifting_rounds(10, TRUE_RPS)
    rounds[4] = {**rounds[4], "c/eight": 0.0}
    standing = next(s for s in analysis.rank(rounds, 5.0).standings if s.cell_id == "c/eight")
    assert standing.rounds == 9


def test_the_finalists_are_the_cells_that_could_be_best_at_the_declared_concurrency():
    records = combine_all(load_run(RECORDED))
    what = questions(records)[0]
    chosen = analysis.finalists(records, Budgets(), what, concurrency=32, max_cells=4)
    assert 2 <= len(chosen) <= 4
    assert all(r.verdict.ok and r.strategy != "control" for r in chosen)
    rps = [next(lv.rps for lv in r.load if lv.concurrency == 32) for r in chosen]
    assert rps == sorted(rps, reverse=True)
    tight = analysis.finalists(records, Budgets(p99_ms=1.0), what, concurrency=32, max_cells=4)
    assert tight == []  # nothing within a 1 ms p99 at c32


def test_the_report_states_the_answer_its_interval_and_power():
    rounds = drifting_rounds(12, TRUE_RPS)
    data = {"concurrency": 32, "seed": 7, "target_mde_pct": 5.0,
            "questions": [{"served": "model default on cpu", "cells": list(TRUE_RPS),
                           "stopped": "decided after 12 rounds",
                           "rounds": [{"order": list(TRUE_RPS), "rps": r} for r in rounds]},
                          {"served": "model large on cpu", "cells": ["x"], "rounds": [],
                           "stopped": "fewer than two finalists: nothing to rank"}]}
    text = render_markdown(finalists_section(data))
    assert "a/best serves the most" in text and "MDE at 80% power" in text and "(seed 7)" in text
    assert "Not ranked:** fewer than two finalists" in text or "Not ranked: fewer than two finalists" in text
    assert finalists_section(None) == []


def test_the_answer_says_a_tie_as_a_tie_and_an_open_pair_as_open():
    from forkwise.matrix.analysis.finalists import BEHIND, BEST, TIED, UNDECIDED, Ranking, Standing
    from forkwise.matrix.publish.finalists_report import answer_text

    def standing(cell, verdict):
        return Standing(cell, 1.0, 0.9, 1.1, 4.0, 40, verdict)

    ranking = Ranking("a", (standing("a", BEST), standing("b", TIED), standing("c", UNDECIDED),
                            standing("d", BEHIND)), 40, 5.0)
    text = answer_text(ranking, "round budget spent (40 rounds), undecided")
    assert text.startswith("a serves the most; b ties with it within 5% (at 80% power); c cannot be told from "
                           "it yet; 1 finalist is behind it (round budget spent")


@pytest.mark.parametrize("target", [1.0, 5.0])
def test_more_rounds_never_needed_than_the_target_asks(target):
    ranking = analysis.rank(drifting_rounds(20, TRUE_RPS), target_mde_pct=target)
    needed = ranking.rounds_for(target)
    assert needed is None or needed >= 1


def profile_and_records(tmp_path: Path, toml: str):
    """A profile from `toml` and a record of each of its cells, never launched: a stage that boots
    its cells itself (the finalists, the goal pairs) needs no more of them."""
    from forkwise.matrix import verdicts
    from forkwise.matrix.run import cell_process
    from forkwise.matrix.run.profile import load_profile

    path = tmp_path / "profile.toml"
    path.write_text(toml)
    profile = load_profile(str(path))
    return profile, [cell_process.failed_cell_record(c, verdicts.judge_no_record(1), "", 1.0) for c in profile.cells]


@pytest.mark.integration
def test_the_stage_boots_the_finalists_side_by_side_measures_rounds_and_stops_them(home, tiny_spec_path, tmp_path,
                                                                                   monkeypatch):
    """Two real deployments of the tiny model, booted together, loaded in random order each round;
    nothing of them is left once the stage returns."""
    from forkwise.matrix.run import finalists
    from owned import TAG_VAR, new_tag, server_processes

    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    profile, records = profile_and_records(
        tmp_path, '[axes]\nstrategy = ["lazy"]\nserver = ["gunicorn-sync", "uwsgi"]\nmodel = ["tiny"]\n'
        '[load]\nlevels = [4]\n[finalists]\nenabled = true\nmin_rounds = 3\nmax_rounds = 3\n'
        'window_s = 0.5\nwarmup_s = 0.2\nseed = 11\n')
    question = finalists.Question("model tiny on cpu", [c.id for c in profile.cells])
    finalists._measure(question, records, profile, home, 4, random.Random(11))
    assert len(question.rounds) == 3 and question.stopped.startswith(("decided", "round budget"))
    assert all(set(r["rps"]) == {c.id for c in profile.cells} and min(r["rps"].values()) > 0 for r in question.rounds)
    assert {tuple(r["order"]) for r in question.rounds} <= {tuple(c.id for c in profile.cells),
                                                           tuple(c.id for c in reversed(profile.cells))}
    assert not any(r["errors"][c] for r in question.rounds for c in r["errors"])
    assert server_processes(tag) == []


def test_a_finalist_clearly_behind_is_measured_no_more_and_the_rounds_go_to_the_close_ones():
    from types import SimpleNamespace

    from forkwise.matrix.run import finalists

    rng = random.Random(5)
    question = finalists.Question("model default on cpu", ["a", "b", "c"])
    question.rounds = [{"order": [], "rps": {"a": 1000 * (1 + rng.gauss(0, .02)), "b": 990 * (1 + rng.gauss(0, .02)),
                                             "c": 700 * (1 + rng.gauss(0, .02))}} for _ in range(8)]
    booted = [SimpleNamespace(cell=SimpleNamespace(id=c)) for c in "abc"]
    settings = SimpleNamespace(min_rounds=8, target_mde_pct=5.0)
    kept = finalists._without_the_behind(question, booted, settings)
    assert [f.cell.id for f in kept] == ["a", "b"] and question.notes == ["c: behind after 8 rounds, measured no more"]
    # Before the minimum rounds, or with two left, nobody is dropped.
    assert finalists._without_the_behind(question, booted, SimpleNamespace(min_rounds=9, target_mde_pct=5.0)) == booted
    assert finalists._without_the_behind(question, kept, settings) == kept


@pytest.mark.integration
def test_finalists_that_do_not_fit_side_by_side_are_booted_in_turn_and_still_interleaved(home, tiny_spec_path,
                                                                                          tmp_path, monkeypatch):
    """boot = "in-turn" (what "auto" does when memory is short): each finalist is booted for its own
    window and stopped after it; the rounds stay interleaved and nothing is left running."""
    from forkwise.matrix.run import finalists
    from owned import TAG_VAR, new_tag, server_processes

    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    profile, records = profile_and_records(
        tmp_path, '[axes]\nstrategy = ["lazy"]\nserver = ["gunicorn-sync", "uwsgi"]\nmodel = ["tiny"]\n'
        '[load]\nlevels = [4]\n[finalists]\nenabled = true\nmin_rounds = 2\nmax_rounds = 2\n'
        'window_s = 0.5\nwarmup_s = 0.2\nseed = 11\nboot = "in-turn"\n')
    question = finalists.Question("model tiny on cpu", [c.id for c in profile.cells])
    finalists._measure(question, records, profile, home, 4, random.Random(11))
    assert len(question.rounds) == 2 and any("booted in turn" in n for n in question.notes)
    assert all(set(r["rps"]) == {c.id for c in profile.cells} and min(r["rps"].values()) > 0 for r in question.rounds)
    assert server_processes(tag) == []


def test_a_run_with_finalists_leads_its_report_and_its_page_with_them(tmp_path):
    """RESULTS.md's answer and results.html's recommendation both come from the run's finalists.json."""
    import json

    from forkwise.matrix.publish.report import write_report
    from forkwise.matrix.records.run_info import FINALISTS_FILE

    records = load_run(RECORDED)
    what = questions(combine_all(records))[0]
    cells = [r.cell_id for r in analysis.finalists(combine_all(records), Budgets(), what, 32, 3)]
    true_rps = dict(zip(cells, (600.0, 597.0, 520.0), strict=False))
    rounds = [{"order": cells, "rps": r} for r in drifting_rounds(12, true_rps)]
    label = "model default on cpu"
    (tmp_path / FINALISTS_FILE).write_text(json.dumps(
        {"concurrency": 32, "seed": 5, "target_mde_pct": 5.0,
         "questions": [{"served": label, "cells": cells, "rounds": rounds, "stopped": "decided after 12 rounds"}]}))
    write_report(records, tmp_path, "default", {})
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## The answer: finalists measured interleaved" in text and f"{cells[0]} serves the most" in text
    page = (tmp_path / "results.html").read_text()
    assert "Finalists measured interleaved at concurrency 32" in page and "finalist: best" in page


def test_two_runs_answers_agree_when_each_best_is_in_the_others_top_set():
    from forkwise.matrix.analysis.compare import RunComparison
    from forkwise.matrix.analysis.finalists import answers_agree
    from forkwise.matrix.publish.compare_report import finalists_blocks

    def data(steady: str, wobbly: str, slow: str) -> dict:
        """`steady` at 1000, `wobbly` 2% above or below it in turn (tied), `slow` at 700."""
        rounds = [{"rps": {steady: 1000.0, wobbly: 1000.0 * (1.02 if i % 2 else 0.98),
                           slow: 700.0 * (1.01 if i % 2 else 0.99)}} for i in range(12)]
        return {"target_mde_pct": 5.0, "questions": [{"served": "model default on cpu", "rounds": rounds}]}

    close, swapped = data("a", "b", "c"), data("b", "a", "c")
    (same,) = answers_agree(close, swapped)
    assert same.agree and (same.best_a, same.best_b) == ("a", "b") and "c" not in same.top_a
    (apart,) = answers_agree(close, data("c", "b", "a"))
    assert not apart.agree and apart.best_b == "c"
    assert answers_agree(close, None) == ()
    result = RunComparison((), (), (), (), (None, None), finalists=(same, apart))  # type: ignore[arg-type]
    text = render_markdown(finalists_blocks(result))
    assert "| model default on cpu |" in text and "| yes |" in text and "| no |" in text
