"""Reliability scenarios: the pieces that need no server, and one real cell per kind of disruption."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forkwise.errors import ConfigError, UnknownNameError
from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run import scenarios
from forkwise.strategies import registry
from forkwise.webapp.validation import BadRequest, instances_from, parse_body
from host_pace import cell_bound_s


def test_recovery_is_measured_from_the_event():
    samples = (100, 100, 100, 100, 0, 0, 40, 90, 100)  # 0.25 s intervals; event at 1.0 s
    recovery, recovered = scenarios._recovery(samples, 1.0, allowance_s=5.0)
    assert recovered and recovery == pytest.approx(1.0)  # interval 7 ends at 2.0 s
    assert scenarios._recovery(samples, 1.0, allowance_s=0.5) == (1.0, False)  # back, but past the allowance
    assert scenarios._recovery((100, 100, 100, 100, 0, 0, 0), 1.0, 5.0) == (None, False)


def test_a_stall_without_an_event_is_measured_and_judged_against_the_allowance():
    assert scenarios._recovery((100, 0, 0, 110, 100, 95, 105), None, 1.0) == (None, True)  # a short dip
    stalled_2s = (100,) + (0,) * 8 + (100,) * 4
    assert scenarios.longest_stall_s(stalled_2s) == (2.0, 0.0)
    assert scenarios._recovery(stalled_2s, None, allowance_s=3.0) == (None, True)  # recycling: a measured stall
    assert scenarios._recovery(stalled_2s, None, allowance_s=1.5) == (None, False)  # longer than allowed
    assert scenarios.longest_stall_s((100, 90, 0, 0, 0)) == (0.75, 0.75)  # still stalled at the end
    assert scenarios._recovery((0, 0, 0), None, 5.0) == (None, False)  # never answered


@pytest.mark.parametrize("slower", [1, 2, 3, 5])
def test_recovery_verdicts_do_not_follow_the_hosts_speed(slower):
    """A host k times slower stretches the cold start and every stretch of the samples k times:
    the allowance and the window stretch with them, so the verdict stays."""
    cold_start = 2.0
    allowance = scenarios.recovery_allowance_s(cold_start * slower)
    event_at, window = scenarios.window_s(9.0, allowance)
    assert window >= event_at + allowance  # the window holds the allowance after the event
    # Recovery takes 2 cold starts after the event (a worker respawned and loaded the model).
    per_s = int(1 / scenarios.INTERVAL_S)
    before = (100,) * int(event_at * per_s)
    dip = (0,) * int(2 * cold_start * slower * per_s)
    samples = before + dip + (100,) * int((window - event_at) * per_s)
    recovery, recovered = scenarios._recovery(samples, event_at, allowance)
    assert recovered and recovery == pytest.approx(2 * cold_start * slower + scenarios.INTERVAL_S, abs=0.3)
    stalled_too_long = before + (0,) * int((allowance + 1) * per_s) + (100,) * 8
    assert scenarios._recovery(stalled_too_long, event_at, allowance)[1] is False


def test_generated_corpus_is_seeded_and_never_valid():
    a, b = scenarios.generated_corpus(8, 120), scenarios.generated_corpus(8, 120)
    assert a == b and len(a) == 120
    for _, _, body, _what in scenarios.generated_corpus(8, 120):
        with pytest.raises(BadRequest):
            instances_from(parse_body(body), (8,), 256)


def test_scenario_names_and_applicability():
    with pytest.raises(UnknownNameError, match="kill-worker"):
        scenarios.get("kill-everything", registry.get("lazy"))
    with pytest.raises(ConfigError, match="does not apply"):
        scenarios.get("kill-model-server", registry.get("lazy"))
    assert scenarios.get("kill-model-server", registry.get("child-process")).event is not None


def run_scenario_cell(home, strategy: str, server: str, scenario: str) -> CellRecord:
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--strategy", strategy,
           "--server", server, "--scenario", scenario, "--scenario-duration", "9"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cell_bound_s())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.integration
@pytest.mark.parametrize("strategy, server, scenario", [
    ("lazy", "uwsgi", "kill-worker"),
    ("child-process", "gunicorn-sync", "kill-model-server"),
    ("locked-singleton", "gunicorn-gthread", "bad-input"),
])
def test_disrupted_cells_recover_and_lose_nothing(home, default_spec_path, strategy, server, scenario):
    record = run_scenario_cell(home, strategy, server, scenario)
    assert record.verdict is Verdict.OK, record.evidence
    assert record.scenario == scenario
    assert record.rows_found == record.rows_expected > 0  # every acknowledged row, intact
    if scenario != "bad-input":
        d = record.disruption
        assert d.event.startswith("SIGKILL") and d.recovered and d.recovery_s is not None
        assert d.failed.timeout == 0 and d.failed.http_5xx == d.http_503  # 503s at most, never a 500


def test_profile_summary_counts_inclusive_and_self():
    from forkwise.matrix.run.profiling import summarize

    folded = "main (a.py:1);serve (a.py:5);model (b.py:9) 30\nmain (a.py:1);serve (a.py:5) 10\nnot a stack line\n"
    text = summarize(folded)
    assert text.startswith("40 samples")
    assert "100.0%  main (a.py:1)" in text and "75.0%  model (b.py:9)" in text
    assert "25.0%  serve (a.py:5)" in text.split("self")[1]
    assert summarize("") .startswith("no samples")
