"""Cells measured in several launches: combining them, the run's pooled noise, and what compare makes of it."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import statistics

import numpy as np
import pytest

from forkwise.errors import ConfigError
from forkwise.matrix import commands
from forkwise.matrix.analysis.compare import compare
from forkwise.matrix.analysis.launches import combine, combine_all, launch_noise
from forkwise.matrix.publish.compare_report import render_comparison
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.types import Evidence, Latency, Verdict
from forkwise.matrix.run.cell import Verification
from forkwise.matrix.run.runner import LoadSettings, load_profile, wants_launch
from test_report import level, record


def launch(strategy: str, rps: dict[int, float], verdict: Verdict = Verdict.OK, **overrides):
    """One launch's record: a level per concurrency, one 1-s sample each."""
    load = tuple(dataclasses.replace(level(c, r, stdev=0.0), rps_samples=(r,), duration_s=1.0, requests=int(r))
                 for c, r in rps.items())
    return record(strategy, "uwsgi", verdict=verdict, load=load, **overrides)


def test_combine_pools_the_samples_of_every_launch():
    first = launch("lazy", {1: 800.0, 8: 1300.0}, cold_start_s=2.0,
                   evidence=Evidence(findings=("note one",), timings_s={"cold_start_s": 2.0}))
    second = launch("lazy", {1: 760.0, 8: 1340.0}, cold_start_s=3.0,
                    evidence=Evidence(findings=("note two",), timings_s={"cold_start_s": 3.0}),
                    worker_pids=(3001, 3002))
    combined = combine([first, second])
    c1 = combined.load[0]
    assert combined.launches == 2 and combined.verdict is Verdict.OK
    assert c1.rps_samples == (800.0, 760.0) and c1.launch_rps == (800.0, 760.0)
    assert c1.rps == 780.0 and c1.rps_stdev == pytest.approx(statistics.stdev([800.0, 760.0]), abs=0.05)
    assert c1.requests == 1560 and c1.duration_s == 2.0
    assert c1.latency.max_ms == max(first.load[0].latency.max_ms, second.load[0].latency.max_ms)
    assert combined.cold_start_s == 2.5
    assert combined.evidence.timings_s["launch2.cold_start_s"] == 3.0
    assert combined.evidence.findings == ("note one", "launch 2: note two")
    assert combined.worker_pids == (2001, 2002, 3001, 3002)
    assert combined.requests == first.requests + second.requests


def test_the_longest_idle_stretch_of_any_launch_is_kept():
    first, second = launch("lazy", {8: 1300.0}), launch("lazy", {8: 1340.0})
    idle = [dataclasses.replace(r, load=(dataclasses.replace(r.load[0], longest_idle_s=s, blocked_after_s=5.0),))
            for r, s in ((first, 0.4), (second, 6.2))]
    combined = combine(idle).load[0]
    assert combined.longest_idle_s == 6.2 and combined.blocked_after_s == 5.0
    assert combine([first, second]).load[0].longest_idle_s is None  # not watched: nothing to keep


def test_latency_percentiles_are_weighted_by_requests():
    slow = launch("lazy", {8: 100.0})
    fast = launch("lazy", {8: 300.0})
    slow = dataclasses.replace(slow, load=(dataclasses.replace(
        slow.load[0], latency=Latency(p50_ms=40.0, p90_ms=50.0, p99_ms=60.0, max_ms=90.0, mean_ms=41.0)),))
    fast = dataclasses.replace(fast, load=(dataclasses.replace(
        fast.load[0], latency=Latency(p50_ms=20.0, p90_ms=25.0, p99_ms=30.0, max_ms=70.0, mean_ms=21.0)),))
    lat = combine([slow, fast]).load[0].latency
    assert lat.p50_ms == pytest.approx((40 * 100 + 20 * 300) / 400)
    assert lat.max_ms == 90.0


def test_a_failed_launch_fails_the_cell_with_its_evidence():
    ok = launch("lazy", {1: 800.0})
    hung = launch("lazy", {}, verdict=Verdict.HANG,
                  evidence=Evidence(findings=("1 requests timed out",), log_tail="WORKER TIMEOUT"))
    combined = combine([ok, hung])
    assert combined.verdict is Verdict.HANG
    assert combined.evidence.log_tail == "WORKER TIMEOUT"
    assert "launch 2: 1 requests timed out" in combined.evidence.findings


def test_combine_all_groups_by_cell_and_passes_single_records():
    a1, b1, a2 = launch("lazy", {1: 800.0}), launch("control", {1: 1600.0}), launch("lazy", {1: 820.0})
    combined = combine_all([a1, b1, a2])
    assert [r.strategy for r in combined] == ["lazy", "control"]
    assert combined[0].launches == 2 and combined[1] is b1
    assert combine_all(combined) == combined  # already combined: unchanged
    with pytest.raises(ValueError):
        combine([])


def _two_launch_cells(relative_gaps: list[float], concurrency: int = 8) -> list:
    """OK cells whose two launches differ by the given relative gaps."""
    cells = []
    for i, gap in enumerate(relative_gaps):
        base = 1000.0 + 10 * i
        cells.append(combine([launch(f"s{i}", {concurrency: base * (1 + gap / 2)}),
                              launch(f"s{i}", {concurrency: base * (1 - gap / 2)})]))
    return cells


def test_launch_noise_is_the_pooled_relative_spread_between_launches():
    cells = _two_launch_cells([0.04] * 9)
    # Two launches differing by 4% of their mean: a relative stdev of 0.04 / sqrt(2) each.
    assert launch_noise(cells)[8] == pytest.approx(0.04 / math.sqrt(2), rel=1e-2)
    assert launch_noise([launch("lazy", {8: 1000.0})]) == {}  # one launch: nothing to pool


def test_a_stalled_cell_raises_the_noise_and_a_failed_one_does_not_count():
    calm = launch_noise(_two_launch_cells([0.04] * 9))[8]
    with_stall = launch_noise(_two_launch_cells([0.04] * 9 + [0.6]))[8]
    assert with_stall == pytest.approx(math.sqrt((9 * 0.04**2 + 0.6**2) / 2 / 10), rel=1e-2) and with_stall > 2 * calm
    failed = dataclasses.replace(_two_launch_cells([0.9])[0], verdict=Verdict.CRASH)
    assert launch_noise(_two_launch_cells([0.04] * 9) + [failed])[8] == pytest.approx(calm)


def _run(lazy_rps: tuple[float, float], gaps: list[float]):
    """A run: cells with launch gaps that set its noise, plus a lazy cell with two close launches."""
    return _two_launch_cells(gaps) + [combine([launch("lazy", {8: lazy_rps[0]}), launch("lazy", {8: lazy_rps[1]})])]


def test_compare_applies_the_runs_launch_noise_as_a_floor():
    # lazy's own two launches agree to 0.2%, but launches of this run's cells differ by ~10%.
    noisy_a, noisy_b = _run((1000.0, 1002.0), [0.10] * 9), _run((1150.0, 1152.0), [0.10] * 9)
    lazy = [c for c in compare(noisy_a, noisy_b).levels if c.cell_id.startswith("lazy/")][0]
    assert lazy.delta_pct == pytest.approx(15.0, abs=0.1) and not lazy.significant
    # The same change in runs whose launches agree to 1% is more than the noise.
    calm_a, calm_b = _run((1000.0, 1002.0), [0.01] * 9), _run((1150.0, 1152.0), [0.01] * 9)
    lazy = [c for c in compare(calm_a, calm_b).levels if c.cell_id.startswith("lazy/")][0]
    assert lazy.significant
    text = render_comparison(compare(calm_a, calm_b))
    assert "Launch-to-launch noise" in text and f"c8 {launch_noise(calm_a)[8] * 100:.1f}%" in text


def test_only_ok_steady_cells_are_launched_again():
    steady = Cell(strategy="lazy", server="uwsgi", workers=2, model="default")
    scenario = steady.replace(scenario="reload")
    ok, hung = launch("lazy", {1: 800.0}), launch("lazy", {}, verdict=Verdict.HANG)
    assert wants_launch(steady, [], 1) and wants_launch(scenario, [], 1)
    assert wants_launch(steady, [ok], 2)
    assert not wants_launch(steady, [hung], 2)
    assert not wants_launch(steady, [launch("lazy", {})], 2)  # no load: nothing to repeat
    assert not wants_launch(scenario, [ok], 2)


@pytest.mark.parametrize("load, message", [
    ("repeats = 0", "repeats"), ("intervals = 0", "intervals"), ("levels = [0]", "levels"),
    ("warmup_s = -1", "warmup_s"), ("repeats = 'two'", "repeats"),
])
def test_bad_load_settings_name_the_profile_and_the_field(tmp_path, load, message):
    path = tmp_path / "mine.toml"
    path.write_text('[axes]\nstrategy = ["control"]\nserver = ["uwsgi"]\nworkers = [2]\nmodel = ["default"]\n'
                    f"[load]\n{load}\n")
    with pytest.raises(ConfigError, match=f"profile mine: .*{message}"):
        load_profile(str(path))


def test_shipped_profiles_load():
    assert load_profile("default").load.repeats == 2
    assert LoadSettings().repeats == 1


def test_rows_written_under_load_are_checked_against_the_reference(default_spec):
    v = Verification(default_spec, serves_model=True, constant=None)
    digest = hashlib.sha256(v.inputs[3].tobytes()).hexdigest()
    right = [float(x) for x in np.asarray(v.outputs[3]).reshape(-1)]
    wrong = [x + 1.0 for x in right]
    assert v.stored_rows_wrong([(digest, right)]) == 0
    assert v.stored_rows_wrong([(digest, wrong), ("0" * 64, right), (digest, right)]) == 2


def test_passes_alternate_in_order_and_an_interrupted_run_resumes(tmp_path, monkeypatch):
    from forkwise.matrix.run import runner

    profile = tmp_path / "two.toml"
    profile.write_text('[axes]\nstrategy = ["control", "lazy", "preload"]\nserver = ["uwsgi"]\nworkers = [2]\n'
                       'model = ["default"]\n[load]\nlevels = [1]\nrepeats = 2\n')
    calls = []

    def fake_cell(cell, prof, home, host=None):
        calls.append(cell.strategy)
        if cell.strategy == "preload":
            return launch("preload", {}, verdict=Verdict.HANG, model=cell.model)
        return launch(cell.strategy, {1: 1000.0 + len(calls)}, model=cell.model)

    monkeypatch.setattr(runner, "run_cell_process", fake_cell)
    monkeypatch.setattr(runner, "ensure_spec", lambda *args, **kwargs: None)
    out = tmp_path / "out"
    assert commands.run_matrix(str(profile), [], out, resume=False, plain=True, home=tmp_path) == 0
    # Pass 2 runs in the same order (each cell's launches one pass apart); the hung cell is
    # not launched again.
    assert calls == ["control", "lazy", "preload", "control", "lazy"]
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 5
    published = {r["strategy"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    assert published["lazy"]["launches"] == 2 and published["preload"]["launches"] == 1

    (out / "records.jsonl").write_text("\n".join(lines[:3]) + "\n")  # interrupted after pass 1
    calls.clear()
    assert commands.run_matrix(str(profile), [], out, resume=True, plain=True, home=tmp_path) == 0
    assert calls == ["control", "lazy"]
    assert len((out / "records.jsonl").read_text().splitlines()) == 5



def test_holm_controls_the_family_of_levels():
    from forkwise.matrix.analysis.compare import holm, p_value

    assert holm([0.001, 0.04, 0.03]) == [True, False, False]  # 0.03 > 0.05 / 2 stops the steps
    assert holm([0.001, 0.02, 0.01]) == [True, True, True]  # 0.01 <= 0.05/2, 0.02 <= 0.05/1
    assert p_value(1.96) == pytest.approx(0.05, abs=1e-3)


def test_in_a_big_comparison_only_a_difference_far_beyond_the_noise_is_flagged():
    # 60 cells whose launches differ by 10%: z around 2 for a 14% change is ordinary in 60 levels.
    base = _two_launch_cells([0.10] * 60)
    moved = [combine([launch(r.strategy, {8: lv * 1.14}) for lv in r.load[0].launch_rps]) if i % 3 == 0 else r
             for i, r in enumerate(_two_launch_cells([0.10] * 60))]
    assert not any(c.significant for c in compare(base, moved).levels)
    moved[1] = combine([launch(moved[1].strategy, {8: lv * 1.8}) for lv in moved[1].load[0].launch_rps])
    flagged = [c for c in compare(base, moved).levels if c.significant]
    assert [c.cell_id.split("/")[0] for c in flagged] == [moved[1].strategy]


def test_top_level_passes_measure_the_highest_level_of_the_ok_cells_only(tmp_path, monkeypatch):
    from forkwise.matrix.run import runner

    profile = tmp_path / "three.toml"
    profile.write_text('[axes]\nstrategy = ["control", "lazy", "preload"]\nserver = ["uwsgi"]\nworkers = [2]\n'
                       'model = ["default"]\n[load]\nlevels = [1, 8]\nrepeats = 2\ntop_level_repeats = 1\n')
    calls = []

    def fake_cell(cell, prof, home, host=None):
        calls.append((cell.strategy, prof.load.levels))
        if cell.strategy == "preload":
            return launch("preload", {}, verdict=Verdict.HANG, model=cell.model)
        return launch(cell.strategy, {c: 1000.0 + len(calls) for c in prof.load.levels}, model=cell.model)

    monkeypatch.setattr(runner, "run_cell_process", fake_cell)
    monkeypatch.setattr(runner, "ensure_spec", lambda *args, **kwargs: None)
    assert commands.run_matrix(str(profile), [], tmp_path / "out", resume=False, plain=True, home=tmp_path) == 0
    assert calls[-2:] == [("control", (8,)), ("lazy", (8,))]  # pass 3: the OK cells, at the top level
    assert [levels for _, levels in calls[:5]] == [(1, 8)] * 5
    published = {r["strategy"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["records"]}
    lazy = {lv["concurrency"]: lv for lv in published["lazy"]["load"]}
    assert len(lazy[8]["launch_rps"]) == 3 and len(lazy[1]["launch_rps"]) == 2
    with pytest.raises(ConfigError, match="top_level_repeats"):
        LoadSettings(top_level_repeats=-1)


def test_a_pass_spreads_each_strategys_cells_over_it():
    from forkwise.matrix.analysis.launches import pass_order

    cells = [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("b", 2), ("c", 1)]
    order = pass_order(cells, lambda c: c[0])
    assert sorted(order) == sorted(cells)
    assert order == [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2), ("a", 4)]
    assert all(x[0] != y[0] for x, y in itertools.pairwise(order))  # no strategy twice in a row
    assert pass_order([("x", 1), ("y", 1)], lambda c: c[0]) == [("x", 1), ("y", 1)]  # profile order kept on ties
