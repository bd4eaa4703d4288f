"""The dated verdict rules (records.rules), a record's own, the report's note on older ones, and
the per-worker stall the newest rule reads (run.progress.longest_stall)."""

from __future__ import annotations

import dataclasses

from forkwise.matrix.publish.document import Para
from forkwise.matrix.publish.report import rules_note
from forkwise.matrix.records import rules
from forkwise.matrix.records.types import Verdict
from forkwise.matrix.run.progress import STALLED_CORE_SHARE, longest_stall
from test_launches import launch


def test_a_record_says_the_rules_that_judged_it_and_an_older_one_is_inferred_from_what_it_saw():
    assert rules.inferred("2026-12-07", "2026-12-07", True) == "2026-12-07"
    assert rules.inferred("", "2026-12-01", True) == rules.CHANGES[0].date  # progress watched: that rule
    assert rules.inferred("", "2026-11-26", False) == rules.BEFORE_FIRST
    assert rules.changed_since(rules.CURRENT) == ()
    assert rules.changed_since(rules.BEFORE_FIRST) == rules.CHANGES
    assert rules.changed_since(rules.CHANGES[0].date) == rules.CHANGES[1:]


def test_the_report_names_verdicts_made_under_older_rules_and_is_silent_for_todays():
    today = dataclasses.replace(launch("lazy", {1: 100.0}), judged_by=rules.CURRENT)
    assert rules_note([today]) == []
    old = dataclasses.replace(launch("preload", {1: 100.0}), judged_by="2026-11-27", verdict=Verdict.HANG)
    (note,) = rules_note([today, old])
    assert isinstance(note, Para) and "1 cells were judged by the rule of 2026-11-27" in note.text
    assert f"{old.cell_id} HANG" in note.text and rules.CHANGES[-1].what in note.text


def test_a_stall_is_the_longest_stretch_in_which_every_counter_grew_less_than_the_share():
    slow = STALLED_CORE_SHARE / 2  # CPU seconds a second: below the share
    fast = 1.0
    points = [(t * 0.5, (t * 0.5 * (slow if t < 8 else fast), t * 0.5 * slow)) for t in range(12)]
    assert abs(longest_stall(points) - 3.5) < 1e-9  # 0 .. 3.5 s, then the first counter computes
    busy_peer = [(at, (a, at * fast)) for at, (a, _) in points]
    assert longest_stall(busy_peer) == 0.0  # the model server computed throughout: not a stall
    assert longest_stall([]) == 0.0


def test_a_change_for_disruptions_only_never_moves_a_steady_cells_verdict():
    disruption_rule = next(c for c in rules.CHANGES if c.disruptions_only)
    before = rules.CHANGES[rules.CHANGES.index(disruption_rule) - 1]
    assert disruption_rule.date > before.date
    assert disruption_rule not in rules.changed_since(before.date, disrupted=False)
    assert disruption_rule in rules.changed_since(before.date, disrupted=True)
    steady = dataclasses.replace(launch("lazy", {1: 100.0}), judged_by=before.date)
    later = [c for c in rules.CHANGES if c.date > before.date and not c.disruptions_only]
    (note,) = rules_note([steady]) if later else ([],)
    assert disruption_rule.what not in getattr(note, "text", "")  # a steady cell is not told of it
