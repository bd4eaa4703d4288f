"""The run's own goal evidence (forkwise.matrix.run.goal_evidence): which cells a missed goal profiles, and
that profiling hands its launches to the caller, not to the run's records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forkwise.matrix.analysis.goals import evaluate
from forkwise.matrix.records.jsonl import read_records
from forkwise.matrix.run import goal_evidence as evidence

RUN = Path(__file__).parent / "fixtures" / "default-runs" / "run-a" / "records.jsonl"


def test_every_cell_of_every_missed_goal_is_a_target_once():
    records = list(read_records(RUN))
    missed = [g for g in evaluate(records, {}) if g.met is False]
    assert missed, "the recorded run misses goals: the test needs one"
    targets = evidence.missed_goal_targets(records)
    assert sorted(t.label for t in targets) == sorted({label for g in missed for label in g.cells})
    assert len({t.label for t in targets}) == len(targets)
    for target in targets:
        assert any(lv.concurrency == target.concurrency for lv in target.record.load)


def test_an_unmeasured_goal_profiles_nothing():
    records = list(read_records(RUN))
    without_large = [r for r in records if r.model != "large"]  # goal 2 unmeasured, not missed
    labels = {t.label for t in evidence.missed_goal_targets(without_large)}
    assert not any(".large." in label for label in labels)


def test_profiling_runs_each_target_in_the_run_folder(tmp_path):
    records = list(read_records(RUN))
    seen = []

    def profile_cell(target, folder):
        seen.append((target.label, folder))
        return dataclasses.replace(target.record, launches=1)

    done = evidence.profile_missed_goals(records, tmp_path, profile_cell)
    assert [label for label, _ in seen] == [t.label for t in evidence.missed_goal_targets(records)]
    assert {folder for _, folder in seen} == {tmp_path / "profiles"} and (tmp_path / "profiles").is_dir()
    assert sorted(done) == sorted(label for label, _ in seen)


def test_micro_benchmarks_say_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(evidence, "BENCHMARKS", tmp_path / "nowhere")
    assert "source checkout" in evidence.micro_benchmarks_missing()


def test_a_run_collects_its_evidence_and_says_what_it_could_not(monkeypatch, tmp_path):
    from forkwise.matrix.run import cell_process
    from forkwise.matrix.run.profile import load_profile

    records = list(read_records(RUN))
    profiled = []

    def fake_cell_process(cell, profile, home, host=None, profile_dir=None):
        profiled.append((cell.strategy, profile.load.levels, profile_dir))
        return next(r for r in records if r.strategy == cell.strategy)

    monkeypatch.setattr(cell_process, "run_cell_process", fake_cell_process)
    monkeypatch.setattr(evidence, "micro_benchmarks_missing", lambda: "pytest-benchmark is not installed")
    monkeypatch.setattr(evidence, "find_py_spy", lambda: "/usr/bin/py-spy")
    said = evidence.collect(tmp_path, records, load_profile("default"), tmp_path / "home")
    assert said["bench"] == "not run: pytest-benchmark is not installed"
    targets = evidence.missed_goal_targets(records)
    assert len(profiled) == len(targets) == len(said["profiles"])
    assert all(levels == (t.concurrency,) and folder == tmp_path / "profiles"
               for (_, levels, folder), t in zip(profiled, targets, strict=True))


def test_the_default_profile_takes_its_goal_evidence_and_quick_does_not():
    from forkwise.matrix.run.profile import load_profile

    assert load_profile("default").goals.evidence and not load_profile("quick").goals.evidence


def test_the_micro_benchmarks_are_found_in_the_source_checkout():
    """The run's goal evidence finds the benchmarks wherever its module sits in the package."""
    assert evidence.BENCHMARKS.is_dir() and any(evidence.BENCHMARKS.glob("test_*.py"))
