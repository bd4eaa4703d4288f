"""The run's own goal evidence (forkwise.matrix.goal_evidence): which cells a missed goal profiles, and
that profiling hands its launches to the caller, not to the run's records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forkwise.matrix import goal_evidence as evidence
from forkwise.matrix.goals import evaluate
from forkwise.matrix.records import read_records

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
    assert len(done) == len(seen)


def test_micro_benchmarks_say_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(evidence, "BENCHMARKS", tmp_path / "nowhere")
    assert "source checkout" in evidence.micro_benchmarks_missing()
