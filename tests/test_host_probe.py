"""The host probe's logic: it waits for an idle deployment, its reference describes this host
(calibrated on a median, re-based when every probe is slow). Time is simulated: no timing asserts."""

from __future__ import annotations

import pytest

from forkwise.matrix.records.types import HOST_SLOW_RATIO
from forkwise.matrix.run import stability


class Clock:
    """time.monotonic and time.sleep of the stability module; sleeping advances the clock."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(stability.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(stability.time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Deployment:
    """CPU seconds of a deployment that drains its queue for `busy_s`, using `cores` of CPU,
    then idles at `idle_share` of a core."""

    def __init__(self, clock: Clock, busy_s: float, cores: float = 2.0, idle_share: float = 0.0):
        self.clock, self.busy_s, self.cores, self.idle_share = clock, busy_s, cores, idle_share

    def cpu_seconds(self) -> float:
        t = self.clock.now
        busy = min(t, self.busy_s)
        return busy * self.cores + max(0.0, t - self.busy_s) * self.idle_share


def probes(monkeypatch, values):
    """check_ms answers these in turn, then the last one again."""
    values = list(values)
    monkeypatch.setattr(stability, "check_ms", lambda: values.pop(0) if len(values) > 1 else values[0])


def test_wait_idle_returns_once_the_cpu_time_stops_advancing(monkeypatch):
    clock = Clock(monkeypatch)
    draining = Deployment(clock, busy_s=0.45, idle_share=0.05)  # housekeeping below the idle share
    idle, waited = stability.wait_idle(draining.cpu_seconds, deadline_s=2.0)
    assert idle and 0.45 < waited <= 0.45 + 2 * stability.POLL_S


def test_wait_idle_gives_up_at_its_deadline(monkeypatch):
    clock = Clock(monkeypatch)
    spinning = Deployment(clock, busy_s=100.0)
    idle, waited = stability.wait_idle(spinning.cpu_seconds, deadline_s=1.0)
    assert not idle and waited == pytest.approx(1.0, abs=stability.POLL_S)


def test_a_deployment_busier_than_housekeeping_is_not_idle(monkeypatch):
    clock = Clock(monkeypatch)
    busy = Deployment(clock, busy_s=0.0, idle_share=2 * stability.IDLE_CPU_SHARE)
    assert not stability.wait_idle(busy.cpu_seconds, deadline_s=0.5)[0]


def test_the_gate_probes_after_a_level_only_once_the_deployment_is_idle(monkeypatch):
    clock = Clock(monkeypatch)
    deployment = Deployment(clock, busy_s=0.7)
    seen = []

    def check() -> float:  # the probe runs slow while the deployment still uses both cores
        seen.append(clock.now)
        return 10.0 if clock.now < 0.7 else 5.0

    monkeypatch.setattr(stability, "check_ms", check)
    gate = stability.QuietGate(reference_ms=5.0, budget_s=0.0, cpu_seconds=deployment.cpu_seconds)
    assert gate.after(drain_s=2.0) == 1.0
    assert seen and min(seen) >= 0.7 and gate.drained_s >= 0.7


def test_the_gate_takes_no_probe_when_the_deployment_never_idles(monkeypatch):
    clock = Clock(monkeypatch)
    spinning = Deployment(clock, busy_s=100.0)
    probes(monkeypatch, [10.0])
    gate = stability.QuietGate(reference_ms=5.0, budget_s=10.0, cpu_seconds=spinning.cpu_seconds)
    assert gate.after(drain_s=1.0) is None
    assert gate.before(drain_s=1.0) is None and gate.waited_s == 0.0  # no waiting for a quiet host either
    assert stability.level_slowdown(None, None) == 0.0  # recorded as not probed


def test_the_gate_does_not_wait_twice_for_an_idle_deployment(monkeypatch):
    clock = Clock(monkeypatch)
    deployment = Deployment(clock, busy_s=0.0)
    probes(monkeypatch, [5.0])
    gate = stability.QuietGate(reference_ms=5.0, budget_s=0.0, cpu_seconds=deployment.cpu_seconds)
    gate.after(drain_s=1.0)
    drained = gate.drained_s
    gate.before(drain_s=1.0)  # nothing ran since: settled
    assert gate.drained_s == drained
    gate.after(drain_s=1.0)  # a level ran: wait again
    assert gate.drained_s > drained


def test_level_slowdown_is_the_largest_probe_taken():
    assert stability.level_slowdown(1.1, None) == 1.1
    assert stability.level_slowdown(1.1, 1.9) == 1.9


def test_calibration_takes_the_median_not_the_fastest(monkeypatch):
    Clock(monkeypatch)
    # One fast moment (a neighbour paused) among ordinary probes.
    probes(monkeypatch, [5.5, 2.0, 5.6, 5.4, 5.5, 5.7] * 10)
    assert stability.calibrate(seconds=0.5) == pytest.approx(5.5, abs=0.1)


def test_the_run_reference_is_rebased_when_every_probe_is_slower():
    ref = stability.RunReference(calibrate=lambda: 2.0)
    assert ref.ms() == 2.0 and ref.calibrated_ms == 2.0
    # A host slower than the calibration said: every level, cell after cell, probes ~2.7x.
    ref.observe([2.6, 2.8, 0.0, 2.7])  # 0: a level not probed, no evidence either way
    ref.observe([2.7, 2.7])
    assert ref.rebased == 0 and ref.ms() == 2.0
    ref.observe([2.9])
    assert ref.rebased == 1 and ref.ms() == pytest.approx(2.0 * 2.7)
    assert ref.calibrated_ms == 2.0  # what the calibration said stays on record


def test_a_slow_spell_between_quiet_probes_keeps_the_reference():
    ref = stability.RunReference(calibrate=lambda: 2.0)
    ref.ms()
    slow = HOST_SLOW_RATIO + 0.5
    ref.observe([slow] * (stability.REBASE_AFTER_PROBES - 1) + [1.05] + [slow] * (stability.REBASE_AFTER_PROBES - 1))
    assert ref.rebased == 0 and ref.ms() == 2.0


def test_the_matrix_reports_its_reference_and_rebasing():
    import dataclasses

    from forkwise.matrix.run.cell_process import HostWatch
    from test_report import level, record

    host = HostWatch(budget_s=60.0)
    assert host.run_info(60.0) == {}  # never probed: nothing to say
    host.reference = stability.RunReference(calibrate=lambda: 2.0)
    host.reference_ms()
    slow_levels = tuple(dataclasses.replace(level(c, 500.0), host_slowdown=3.0) for c in (1, 8, 32))
    host.after_cell(record("lazy", "uwsgi", load=slow_levels))
    host.after_cell(record("lazy", "uwsgi", load=slow_levels))
    info = host.run_info(60.0)
    assert info["probe_reference_ms"] == 2.0 and info["probe_final_reference_ms"] == 6.0
    assert info["probe_rebased"] == 1
