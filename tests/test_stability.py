"""The CPU probe around load levels: waiting for a quiet host, and setting aside launches that
measured a slow spell of the host rather than the cell."""

from __future__ import annotations

import dataclasses

import pytest

from forkwise.errors import ConfigError
from forkwise.matrix.analysis.launches import combine, launch_noise
from forkwise.matrix.publish.report import header_facts
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run import stability
from forkwise.matrix.run.runner import LoadSettings
from test_launches import launch


class FakeHost:
    """check_ms answers from a script of probe times; time advances only by the gate's sleeps."""

    def __init__(self, monkeypatch, probes: list[float]):
        self.probes, self.now = list(probes), 0.0
        monkeypatch.setattr(stability, "check_ms", lambda: self.probes.pop(0) if len(self.probes) > 1
                            else self.probes[0])
        monkeypatch.setattr(stability.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(stability.time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_gate_waits_for_the_probe_to_come_back_to_speed(monkeypatch):
    FakeHost(monkeypatch, [10.0, 10.0, 10.0, 5.6, 5.5])
    gate = stability.QuietGate(reference_ms=5.0, budget_s=10.0)
    assert gate.before() == pytest.approx(5.6 / 5.0)
    assert gate.waited_s == pytest.approx(3 * stability.POLL_S)
    assert gate.after() == pytest.approx(5.5 / 5.0)


def test_the_gate_waits_at_most_its_caps_and_still_says_how_slow(monkeypatch):
    FakeHost(monkeypatch, [11.0])  # a spell longer than any wait
    gate = stability.QuietGate(reference_ms=5.5, budget_s=2.0, max_wait_s=1.5)
    assert gate.before() == pytest.approx(2.0)
    assert gate.waited_s == pytest.approx(1.5, abs=stability.POLL_S)
    gate.before()  # only what is left of the budget
    assert gate.waited_s == pytest.approx(2.0, abs=stability.POLL_S)
    gate.before()
    assert gate.waited_s == pytest.approx(2.0, abs=stability.POLL_S)  # spent: no more waiting


def test_the_cells_reference_stays_put(monkeypatch):
    # A faster probe is no new reference: the run's (stability.RunReference) describes the host.
    FakeHost(monkeypatch, [4.0, 8.0])
    gate = stability.QuietGate(reference_ms=5.0, budget_s=0.0)
    assert gate.before() == 0.8 and gate.reference_ms == 5.0
    assert gate.after() == 1.6 and gate.reference_ms == 5.0


def test_a_real_probe_takes_milliseconds():
    ms = stability.probe_ms(loops=20_000)
    assert 0 < ms < 1000


def slowed(record, concurrency: int, slowdown: float):
    return dataclasses.replace(record, load=tuple(
        dataclasses.replace(lv, host_slowdown=slowdown if lv.concurrency == concurrency else 1.05)
        for lv in record.load))


def test_a_launch_that_measured_a_slow_spell_counts_like_every_launch_and_is_marked():
    """No launch is set aside: dropping the slow one would pick the fast and lower the noise."""
    clean = slowed(launch("lazy", {1: 760.0, 8: 1300.0}), 1, 1.05)
    spell = slowed(launch("lazy", {1: 480.0, 8: 1320.0}), 1, 1.9)
    c1, c8 = combine([clean, spell]).load
    assert c1.launch_rps == (760.0, 480.0) and c1.launches_slow == 1
    assert c1.host_slowdown == 1.9 and c1.host_slow
    assert c1.requests == 760 + 480
    assert c8.launch_rps == (1300.0, 1320.0) and c8.launches_slow == 0
    noise = launch_noise([combine([clean, spell])])
    assert set(noise) == {1, 8} and noise[1] > noise[8]  # the slow launch's spread is in the noise


def test_a_retired_field_of_an_older_record_is_read_and_dropped():
    data = launch("lazy", {1: 760.0}).to_dict()
    data["load"][0]["launches_set_aside"] = 0
    assert CellRecord.from_dict(data).load[0].launches_slow == 0


def test_results_header_counts_the_slow_spells():
    clean = slowed(launch("lazy", {1: 760.0}), 1, 1.05)
    spell = slowed(launch("lazy", {1: 480.0}), 1, 1.9)
    facts = dict(header_facts([combine([clean, spell])], "default", {"quiet_wait_s": 12.5}))
    assert facts["host slow spells"].startswith("1 launch-levels were measured while the CPU probe ran over 1.4x")
    assert "none is set aside" in facts["host slow spells"]
    assert facts["host slow spells"].endswith("12.5 s spent waiting for a quiet host")
    assert "host slow spells" not in dict(header_facts([launch("lazy", {1: 760.0})], "default", {}))


@pytest.mark.parametrize("budget", [-1.0, "60"])
def test_the_runs_waiting_budget_is_validated(budget):
    with pytest.raises(ConfigError, match="quiet_budget_s"):
        LoadSettings(quiet_budget_s=budget)
