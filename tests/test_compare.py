"""compare on two recorded default runs of the same code (tests/fixtures/default-runs) with planted changes, and
its noise rules, tests and exit status on synthetic records (no servers, no TensorFlow)."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import shutil
from pathlib import Path

import pytest

from forkwise.cli import main
from forkwise.errors import RecordError
from forkwise.matrix.analysis.compare import compare
from forkwise.matrix.analysis.compare_runs import ALPHA_STRATEGY, load_run
from forkwise.matrix.analysis.controls import control_for
from forkwise.matrix.analysis.significance import (
    PassNoise,
    critical_z,
    estimate_shift,
    pass_noise,
    tail_spread,
    worsening_pct,
)
from forkwise.matrix.publish.compare_report import regressions, render_comparison
from forkwise.matrix.records.jsonl import append_record
from forkwise.matrix.records.types import CellRecord, Memory, ProcessMemory, Verdict
from test_report import crash_record, level, ok_record, record, run_records

# Two default runs of the same code (f2e46e3), recorded on the 2-core machine on a day its
# launch-to-launch noise was 9-15%: compare's power and its quiet on no change are tested on them.
RECORDED = Path(__file__).resolve().parent / "fixtures" / "default-runs"
RUN_A, RUN_B = RECORDED / "run-a", RECORDED / "run-b"


@pytest.fixture(scope="module")
def committed() -> tuple[list[CellRecord], list[CellRecord]]:
    """Two default runs of the same code, every launch as measured."""
    return load_run(RUN_A), load_run(RUN_B)


def scaled(records, factor: float, strategy: str | None = None, concurrency: int | None = None,
           metric: str = "rps") -> list[CellRecord]:
    """Records with a planted change: rps (or p99) times ``factor`` in every launch of the chosen cells."""
    def level_of(lv):
        if concurrency is not None and lv.concurrency != concurrency:
            return lv
        if metric == "p99":
            return dataclasses.replace(lv, latency=dataclasses.replace(lv.latency, p99_ms=lv.latency.p99_ms * factor))
        return dataclasses.replace(lv, rps=lv.rps * factor, rps_samples=tuple(x * factor for x in lv.rps_samples),
                                   launch_rps=tuple(x * factor for x in lv.launch_rps))

    return [dataclasses.replace(r, load=tuple(level_of(lv) for lv in r.load))
            if strategy is None or r.strategy == strategy else r for r in records]


def flagged(result) -> list[str]:
    """Everything a comparison flagged, by name."""
    out = [f"shift {s.metric}" for s in result.shifts if s.difference.significant]
    out += [f"strategy {s.strategy}" for s in result.strategies if s.difference.significant]
    return out + [f"{m.name} {label}" for label, m, d in result.cell_differences() if d.significant]


# --- the committed runs: the properties the default profile must have --------------------------


def test_two_runs_of_the_same_code_flag_nothing(committed):
    result = compare(*committed)
    assert len(result.strategies) >= 6 and result.shifts
    assert flagged(result) == [] and not any(c.verdict_changed for c in result.levels)
    assert regressions(result) == []


def test_two_runs_of_the_same_code_agree_on_the_recommendation(committed):
    result = compare(*committed)
    assert result.recommendation and result.contradictions == ()
    assert all(a.common for a in result.recommendation)
    text = render_comparison(result)
    assert "## The recommendation in both runs" in text and "No contradiction" in text


def test_a_recommendation_that_changes_is_a_contradiction(committed):
    a, b = committed
    best = compare(a, b).recommendation[0].set_a[0].split("/")[0]
    result = compare(a, scaled(b, 0.4, strategy=best))  # run b's answer moves away from a's best strategy
    assert result.contradictions
    assert "Contradictions: " in render_comparison(result)


def test_a_p99_of_few_launches_is_shown_not_judged_and_of_many_is_judged():
    """One stall multiplies a short level's p99 (two runs of one code: 18.8 -> 167 ms at c8 with 2
    launches a side): with fewer than 3 launches a side it is shown, not judged; at c32 (5 launches,
    as in `default`) a 5x p99 is flagged."""
    rng = random.Random(3)

    def with_p99(records, factor_of):
        return [dataclasses.replace(r, load=tuple(dataclasses.replace(lv, latency=dataclasses.replace(
            lv.latency, p99_ms=10.0 * factor_of(r) * math.exp(rng.gauss(0, 0.2)))) for lv in r.load))
            for r in records]

    a = with_p99(synthetic_run(rng, 0.10, top_level_passes=3), lambda r: 1.0)
    b = with_p99(synthetic_run(rng, 0.10, top_level_passes=3),
                 lambda r: 5.0 if (r.strategy, r.server) == ("s3", "uwsgi") else 1.0)
    cell = next(r.cell_id for r in b if (r.strategy, r.server) == ("s3", "uwsgi"))
    rows = {c.concurrency: c.p99 for c in compare(a, b).levels if c.cell_id == cell and c.p99 is not None}
    assert rows[8].se is None and "fewer than 3 launches" in rows[8].untested and not rows[8].significant
    assert rows[32].significant


def test_a_15_percent_slowdown_of_one_strategy_at_the_top_level_is_flagged(committed):
    a, b = committed
    result = compare(a, scaled(b, 0.85, "lazy", 32))
    found = flagged(result)
    assert found[0] == "strategy lazy" and all(" lazy/" in f for f in found[1:])  # nothing but lazy
    lazy = next(s for s in result.strategies if s.strategy == "lazy")
    assert lazy.concurrency == 32 and lazy.cells == 7
    # Flagged here; at 80% power these recorded runs (noise 9-15%) find about 18% (a 15% change
    # is found less often than that): the MDE says so rather than the 50% power it once printed.
    assert lazy.difference.adjusted_pct == pytest.approx(-15, abs=3) and 15 < lazy.difference.mde_pct < 22
    assert any(line.startswith("throughput of lazy at c32 (7 cells)") for line in regressions(result, 10.0))
    assert regressions(result, 40.0) == []  # beyond the noise, not beyond a 40% threshold


def test_a_uniform_slowdown_is_flagged_as_a_run_shift_not_absorbed(committed):
    a, b = committed
    result = compare(a, scaled(b, 0.7))
    shift = next(s for s in result.shifts if s.metric == "throughput")
    assert shift.factor == pytest.approx(0.7 * 1.011, abs=0.01)
    assert flagged(result) == ["shift throughput"]  # every cell alike: the run, not one cell
    assert regressions(result, 25.0) == [line for line in regressions(result, 25.0) if "run shift" in line] != []
    text = render_comparison(result)
    assert "ran at 0.70" in text and "beyond the noise (z" in text


def test_every_level_prints_its_minimum_detectable_effect(committed):
    result = compare(*committed)
    text = render_comparison(result)
    assert "Median minimum detectable effect: strategies at c32" in text
    # ... and how many launches a cell would need for 5% (the MDE falls with their square root).
    needed = re.search(r"To detect 5% between strategies here: about (\d+) launches a cell \(now (\d+)\)", text)
    assert needed and int(needed.group(1)) > int(needed.group(2)) >= 2
    rows = [line for line in text.splitlines() if line.startswith("| lazy/uwsgi/w2/default/cpu/steady | 32 |")]
    assert len(rows) == 1 and rows[0].split(" | ")[7].endswith("%")  # the MDE column
    assert all(c.throughput.mde_pct for c in result.levels if c.throughput is not None)
    assert "± 0.0" not in text


# --- the power of a strategy test, where a strategy's cells do not share slow spells ----------------


def synthetic_run(rng: random.Random, noise: float, slowdown: dict[str, float] | None = None,
                  passes: int = 2, top_level_passes: int = 1) -> list[CellRecord]:
    """The default profile's passes over 8 strategies x 4 servers (c1, c8, c32; then c32 only), each
    launch's rps off by ``noise`` (log stdev), independently: what pass_order gives on a machine with
    that launch noise. ``slowdown``: strategy -> factor at c32."""
    records = []
    for number in range(passes + top_level_passes):
        for strategy in [f"s{i}" for i in range(8)]:
            for server in ("gunicorn-sync", "gunicorn-gthread", "uwsgi", "uwsgi-threads"):
                levels = []
                for c in ((1, 8, 32) if number < passes else (32,)):
                    factor = (slowdown or {}).get(strategy, 1.0) if c == 32 else 1.0
                    rps = 100.0 * c**0.5 * factor * math.exp(rng.gauss(0, noise))
                    levels.append(dataclasses.replace(level(c, rps), rps_samples=(rps,)))
                records.append(record(strategy, server, load=tuple(levels)))
    return records


def test_a_strategy_of_four_cells_is_found_at_15_percent_and_a_null_pair_stays_quiet():
    # The committed runs' launch noise at c32 is 8.6-11.2%; 10% here. Expected: a 4-cell strategy
    # slowed by 15% is flagged 3 times in 4 (about 1 in 2 without the top-level pass); a pair of
    # runs of the same code flags anything at all about 1 time in 20.
    rng = random.Random(12)
    found = sum(any(s.strategy == "s3" and s.difference.significant
                    for s in compare(synthetic_run(rng, 0.10), synthetic_run(rng, 0.10, {"s3": 0.85})).strategies)
                for _ in range(40))
    quiet = sum(not flagged(compare(synthetic_run(rng, 0.10), synthetic_run(rng, 0.10))) for _ in range(40))
    assert found >= 26 and quiet >= 36


# --- the statistics --------------------------------------------------------------------------------


def test_critical_z_and_worsening():
    assert critical_z(0.05, 1) == pytest.approx(1.96, abs=0.01)
    assert critical_z(ALPHA_STRATEGY, 8) == pytest.approx(2.85, abs=0.01)
    assert worsening_pct(math.log(0.85), True) == pytest.approx(15.0)  # a throughput 15% lower
    assert worsening_pct(math.log(1.1), True) == pytest.approx(-10.0)  # 10% faster: no worsening
    assert worsening_pct(math.log(1.2), False) == pytest.approx(20.0)  # a latency 20% higher


def _samples(rng: random.Random, strategy_effect: float) -> tuple[dict, dict]:
    """Two passes of 8 strategies x 4 cells; the cells of a strategy share its effect in each pass."""
    samples, strategy_of = {}, {}
    for s in range(8):
        effects = [rng.gauss(0, strategy_effect) for _ in range(2)]
        for c in range(4):
            cell = f"s{s}/c{c}"
            strategy_of[cell] = f"s{s}"
            samples[(cell, 32)] = tuple(1000 * math.exp(e + rng.gauss(0, 0.05) + drift)
                                        for e, drift in zip(effects, (0.1, -0.1), strict=True))
    return samples, strategy_of


def test_pass_noise_measures_the_drift_and_the_strategy_effect():
    rng = random.Random(3)
    samples, strategy_of = _samples(rng, 0.08)
    noise = pass_noise(samples, strategy_of.get)
    assert noise.passes == 2 and noise.drift == pytest.approx(0.1 * math.sqrt(2), abs=0.05)
    assert 0.04 < noise.strategy < 0.13
    calm = pass_noise(_samples(rng, 0.0)[0], strategy_of.get)
    assert calm.strategy < 0.03
    assert pass_noise({("x", 32): (1000.0,)}, lambda c: "x") == PassNoise()  # one launch: nothing measured


def test_the_shift_is_tested_against_the_pass_drift():
    ratios = [0.0] * 50
    quiet = estimate_shift(ratios, (PassNoise(2, 0.02), PassNoise(2, 0.02)))
    assert quiet.se == pytest.approx(0.02) and quiet.median_se == 0.0
    unknown = estimate_shift(ratios, (PassNoise(), PassNoise()))
    assert unknown.se is None  # one launch per cell: the shift cannot be tested, and says so
    borrowed = estimate_shift(ratios, (PassNoise(), PassNoise(2, 0.02)))
    assert borrowed.se == pytest.approx(0.02)


def test_tail_spread_covers_the_launches_that_met_a_stall():
    calm = {(f"c{i}", 32): (100.0, 105.0) for i in range(40)}
    stalled = calm | {(f"s{i}", 32): (100.0, 300.0) for i in range(4)}
    assert tail_spread(calm) == pytest.approx(math.log(1.05) / (1.96 * math.sqrt(2)), rel=1e-3)
    assert tail_spread(stalled) > 5 * tail_spread(calm)
    assert tail_spread({("c", 32): (1.0, 2.0)}) is None  # too few pairs to fit a tail


# --- memory, cold start, p99 and a single sample ------------------------------------------------------


def per_launch_run(rss: dict[str, tuple[float, float]], cold: float = 2.0, p99: float = 20.0) -> list[CellRecord]:
    """Two launches per cell; memory and cold start per launch, as records.jsonl keeps them."""
    out = []
    for launch in range(2):
        for i, (strategy, values) in enumerate(rss.items()):
            jitter = 1 + 0.01 * ((i + launch) % 3 - 1)
            mem = Memory.of([ProcessMemory("worker", 1, values[launch], values[launch] / 2, values[launch] / 2, 1.0)])
            out.append(record(strategy, "uwsgi", memory=mem, cold_start_s=cold * jitter,
                              load=(level(32, 1000.0 * jitter, p99_ms=p99 * jitter),)))
    return out


RSS = {f"s{i}": (500.0 + 10 * i, 505.0 + 10 * i) for i in range(8)}


def test_memory_and_cold_start_are_compared_per_launch():
    result = compare(per_launch_run(RSS), per_launch_run(RSS | {"s2": (700.0, 705.0)}))
    assert flagged(result) == ["memory (total RSS) s2/uwsgi/w2/mlp-small/cpu/steady"]
    s2 = next(c for c in result.cells if c.cell_id.startswith("s2/"))
    assert s2.memory.a == pytest.approx(520 + 2.5) and s2.memory.mde_pct < 10
    assert regressions(result, 10.0) and not regressions(result, 50.0)
    doubled = [dataclasses.replace(r, cold_start_s=r.cold_start_s * 2) if r.strategy == "s7" else r
               for r in per_launch_run(RSS)]
    slower_boot = compare(per_launch_run(RSS), doubled)
    assert flagged(slower_boot) == ["cold start s7/uwsgi/w2/mlp-small/cpu/steady"]
    s7 = next(c for c in slower_boot.cells if c.cell_id.startswith("s7/"))
    assert s7.cold_start.adjusted_pct == pytest.approx(100)


def test_a_level_with_one_sample_has_unknown_spread_not_zero():
    one = dataclasses.replace(level(8, 1000.0), rps_samples=(1000.0,), rps_stdev=0.0)
    a = [record("lazy", "uwsgi", load=(one,))]
    b = [record("lazy", "uwsgi", load=(dataclasses.replace(one, rps=500.0, rps_samples=(500.0,)),))]
    (row,) = compare(a, b).levels
    assert not row.significant and row.throughput.untested.startswith("spread unknown")
    text = render_comparison(compare(a, b))
    assert "spread unknown: one sample on each side" in text and "± 0.0" not in text


def test_a_cell_that_failed_in_run_b_is_a_regression():
    a = [record("lazy", "uwsgi", load=(level(8, 1000.0),))]
    b = [record("lazy", "uwsgi", Verdict.HANG)]
    result = compare(a, b)
    assert result.levels[0].verdict_changed and result.levels[0].significant
    assert regressions(result, 50.0) == ["lazy/uwsgi/w2/mlp-small/cpu/steady: verdict OK -> HANG"]


# --- the exit status a CI job gates on ----------------------------------------------------------------


def _write(path: Path, records) -> Path:
    path.mkdir()
    for r in records:
        append_record(path / "records.jsonl", r)
    return path


def test_exit_status(tmp_path, committed, capsys):
    a, b = committed
    same = _write(tmp_path / "b", b)
    slower = _write(tmp_path / "slower", scaled(b, 0.85, "lazy", 32))
    assert main(["compare", str(RUN_A), str(same), "--max-regression", "0"]) == 0
    assert main(["compare", str(RUN_A), str(slower)]) == 0  # no threshold: a report only
    out = tmp_path / "COMPARE.md"
    assert main(["compare", str(RUN_A), str(slower), "--max-regression", "10", "--out", str(out)]) == 1
    assert "regression: throughput of lazy at c32" in capsys.readouterr().err
    assert "strategies at concurrency 32 differ as a whole (lazy)" in out.read_text()
    assert main(["compare", str(RUN_A), str(slower), "--max-regression", "40"]) == 0
    assert main(["compare", str(RUN_A), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(RUN_A), str(same), "--max-regression", "-1"]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["compare", str(RUN_A)])
    assert usage.value.code == 2
    shutil.rmtree(same)


# --- synthetic runs: matching, verdicts, the shift, loading ---------------------------------------------


def with_rps(rec: CellRecord, factor: float, stdev: float) -> CellRecord:
    load = tuple(dataclasses.replace(lv, rps=lv.rps * factor, rps_stdev=stdev) for lv in rec.load)
    return dataclasses.replace(rec, load=load)


def lazy_cell() -> CellRecord:
    return ok_record("lazy", "gunicorn-sync")


def test_compare_identical_runs_is_quiet():
    result = compare(run_records(), run_records())
    assert result.levels and flagged(result) == []
    assert all(c.delta_pct in (0.0, None) for c in result.levels)
    assert len(result.levels) == sum(max(1, len(r.load)) for r in run_records())


def test_a_single_launch_is_judged_by_its_own_interval_spread():
    (c1, c8) = compare([with_rps(lazy_cell(), 1.0, 2.0)], [with_rps(lazy_cell(), 1.5, 2.0)]).levels
    assert c8.concurrency == 8 and c8.significant and c8.delta_pct == pytest.approx(50.0) and c1.significant
    (_, small) = compare([with_rps(lazy_cell(), 1.0, 40.0)], [with_rps(lazy_cell(), 1.03, 40.0)]).levels
    assert not small.significant and small.delta_pct == pytest.approx(3.0)


def test_compare_flags_a_verdict_change():
    a = [lazy_cell(), crash_record()]
    b = [lazy_cell(), dataclasses.replace(crash_record(), verdict=Verdict.OK)]
    (changed,) = [c for c in compare(a, b).levels if c.cell_id.startswith("preload/")]
    assert changed.concurrency is None and changed.significant and changed.verdict_changed
    assert (changed.verdict_a, changed.verdict_b, changed.note) == (Verdict.CRASH, Verdict.OK,
                                                                    "verdict changed: CRASH -> OK")
    table = render_comparison(compare(a, b))
    assert "| preload/uwsgi/w2/mlp-small/cpu/steady | - | - | - |" in table and "| yes | CRASH -> OK |" in table
    assert "1 cells changed verdict" in table


def test_compare_cells_in_one_run_only():
    result = compare([lazy_cell()], [crash_record()])
    notes = {c.cell_id.split("/")[0]: c.note for c in result.levels}
    assert notes == {"lazy": "only in run a", "preload": "only in run b"}
    summary = render_comparison(result).splitlines()[0]
    assert "0 cells changed verdict; 2 cells ran in one run only." in summary  # missing is not a change
    assert regressions(result) == []


def _machine(factor: float, lazy_rps: float = 500.0) -> list[CellRecord]:
    """Six cells on one machine: five whose rps scale with the machine, and lazy."""
    cells = [record(s, "uwsgi", load=(level(8, 1000.0 * factor, stdev=10.0 * factor),))
             for s in ("control", "import-in-route", "locked-singleton", "child-process", "child-process-batched")]
    return cells + [record("lazy", "uwsgi", load=(level(8, lazy_rps, stdev=5.0),))]


def test_compare_factors_out_a_whole_machine_shift():
    # The whole machine ran 20% faster in run b: every cell alike. Not a difference of any one cell;
    # with one launch per cell, how far a run drifts is not measured, so the shift is not tested.
    result = compare(_machine(1.0), _machine(1.2, lazy_rps=600.0))
    (shift,) = [s for s in result.shifts if s.metric == "throughput"]
    assert shift.factor == pytest.approx(1.2) and shift.estimate.levels == 6 and shift.difference.se is None
    assert not any(c.significant for c in result.levels)
    assert all(c.delta_pct == pytest.approx(20.0) and c.adjusted_delta_pct == pytest.approx(0.0) for c in result.levels)
    text = render_comparison(result)
    assert "ran at 1.200x run a" in text and "not tested: neither run measured how its passes drift" in text
    # lazy fell while the machine sped up: that is lazy's own.
    b = _machine(1.2)[:-1] + [record("lazy", "uwsgi", load=(level(8, 400.0, stdev=5.0),))]
    lazy = {c.cell_id.split("/")[0]: c for c in compare(_machine(1.0), b).levels}["lazy"]
    assert lazy.significant and lazy.adjusted_delta_pct == pytest.approx(400 / 1.2 / 500 * 100 - 100)


def test_compare_of_a_few_cells_is_judged_raw():
    result = compare(_machine(1.0)[:2], _machine(1.2)[:2])
    assert result.shifts == () and all(c.significant for c in result.levels)
    assert "judged raw" in render_comparison(result)


def test_load_run_prefers_every_launch(tmp_path):
    from forkwise.matrix.publish.report import write_report

    jsonl_only = tmp_path / "partial"
    jsonl_only.mkdir()
    for rec in run_records()[:2] + run_records()[:2]:
        append_record(jsonl_only / "records.jsonl", rec)
    assert load_run(jsonl_only) == run_records()[:2] * 2  # every launch, as measured
    results_only = tmp_path / "published"
    write_report(run_records(), results_only, "test", {"profile": "test", "duration_s": 1.0})
    (results_only / "records.jsonl").unlink(missing_ok=True)
    assert [r.cell_id for r in load_run(results_only)] == [r.cell_id for r in run_records()]
    with pytest.raises(RecordError):
        load_run(tmp_path / "nothing")


# --- the control of a cell -------------------------------------------------------------------------------


def test_the_control_shares_server_workers_model_device_and_backend():
    jax_lazy = record("lazy", "uwsgi", device="gpu", backend="jax")
    torch_control = record("control", "uwsgi", device="gpu", backend="torch")
    jax_control = record("control", "uwsgi", device="gpu", backend="jax")
    assert control_for(jax_lazy, [torch_control]) is None  # never another backend's ceiling
    assert control_for(jax_lazy, [torch_control, jax_control]) is jax_control
    steady = record("control", "uwsgi")
    reload = record("control", "uwsgi", scenario="reload")
    assert control_for(record("lazy", "uwsgi", scenario="reload"), [steady, reload]) is reload
    assert control_for(record("lazy", "uwsgi", scenario="kill-worker"), [steady, reload]) is steady
    assert control_for(record("lazy", "uwsgi", workers=4), [steady]) is None


def test_which_strategy_is_the_control_comes_from_its_class(monkeypatch):
    from forkwise.matrix.analysis import controls
    from forkwise.strategies import registry
    from forkwise.strategies.base import Strategy

    class Ceiling(Strategy):
        name = "ceiling"
        serves_model = False

    assert controls.is_control("control") and not controls.is_control("lazy")
    assert not controls.is_control("not-installed-here")
    monkeypatch.setattr(registry, "names", lambda: ["ceiling", "lazy"])
    monkeypatch.setattr(registry, "get", lambda name: Ceiling)
    controls.is_control.cache_clear()
    try:
        assert controls.is_control("ceiling")
        assert control_for(record("lazy", "uwsgi"), [record("ceiling", "uwsgi")]).strategy == "ceiling"
    finally:
        controls.is_control.cache_clear()


def test_compare_divides_by_the_same_runs_control_of_the_same_backend():
    def run(factor):
        return [record("control", "uwsgi", backend=b, load=(level(8, 2000.0 * factor if b == "jax" else 1000.0),))
                for b in ("jax", "torch")] + [record("lazy", "uwsgi", backend="jax", load=(level(8, 1000.0),))]

    lazy = next(c for c in compare(run(1.0), run(0.5)).levels if c.cell_id.startswith("lazy/"))
    assert (lazy.vs_control_a, lazy.vs_control_b) == (0.5, 1.0)


def _on_another_kernel(records: list[CellRecord], platform: str, numpy: str, commit: str) -> list[CellRecord]:
    """The same records, as if measured on another kernel with another numpy (and one commit)."""
    def moved(r: CellRecord) -> CellRecord:
        env = dataclasses.replace(r.environment, platform=platform, git_commit=commit,
                                  packages={**r.environment.packages, "numpy": numpy})
        return dataclasses.replace(r, environment=env)

    return [moved(r) for r in records]


def test_compare_names_what_differs_between_the_environments(committed):
    run_a, run_b = committed
    # Run b holds launches of a modified checkout beside clean ones: a difference, and named.
    assert [d.aspect for d in compare(run_a, run_b).environment] == ["git commit"]
    env = run_a[0].environment
    same = compare(run_a, _on_another_kernel(run_b, env.platform, env.packages["numpy"], env.git_commit))
    assert [d.aspect for d in same.environment] == []
    assert "environments are the same" in render_comparison(same)
    moved = _on_another_kernel(run_b, "Linux-9.9.9-other-x86_64", "0.0.1", env.git_commit)
    quiet = compare(run_a, moved)
    assert [d.aspect for d in quiet.environment] == ["kernel and platform", "package numpy"]
    assert quiet.environment[1].b == ("0.0.1",) and "0.0.1" not in quiet.environment[1].a
    text = render_comparison(quiet)
    assert "differ in kernel and platform, package numpy; nothing is flagged" in text
    assert "Linux-9.9.9-other-x86_64" in text


def test_a_flag_that_coincides_with_a_change_of_environment_says_so(committed):
    run_a, run_b = committed
    env = run_a[0].environment
    slowed = _on_another_kernel(scaled(run_b, 0.7), "Linux-9.9.9-other-x86_64", env.packages["numpy"], env.git_commit)
    text = render_comparison(compare(run_a, slowed))
    assert "coincides with a change of kernel and platform" in text


def test_compare_shows_the_same_p99_as_the_report(committed):
    """One p99 aggregate for every report: a level's p99 in COMPARE.md is the report's (launches
    weighted by their requests), not another mean of the same launches."""
    from forkwise.matrix.analysis.launches import combine_all

    run_a, run_b = committed
    shown = {r.cell_id: r for r in combine_all(run_a)}
    levels = [c for c in compare(run_a, run_b).levels if c.p99_ms_a is not None]
    assert levels
    for c in levels:
        level = next(lv for lv in shown[c.cell_id].load if lv.concurrency == c.concurrency)
        assert c.p99_ms_a == level.latency.p99_ms
