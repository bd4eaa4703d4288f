"""Recovery judged against what the host allowed (matrix.run.scenarios.host_adjusted, the shares
ProgressWatch measures): a neighbour that starts computing after the event does not turn a
recovered cell into a CRASH, and a cell that did not recover still fails."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest

from forkwise.matrix.run import scenarios
from forkwise.matrix.run.progress import ProgressWatch, machine_busy_s

INTERVAL = scenarios.INTERVAL_S
BEFORE = (400.0,) * 8  # two seconds at the cell's rate, then the event at 2.0 s


def _judge(samples, shares=()):
    return scenarios._recovery(scenarios.host_adjusted(samples, shares), 2.0, allowance_s=2.0)


def test_a_neighbour_that_takes_half_the_machine_after_the_event_does_not_fail_a_recovered_cell():
    # After the event: a dip, then the cell serves all the machine lets it, half of its rate.
    after = (0.0, 0.0, 190.0, 200.0, 205.0, 198.0, 201.0, 199.0)
    samples = BEFORE + after
    assert _judge(samples) == (None, False)  # on the raw rates: "did not recover"
    shares = (1.0,) * 8 + (0.5,) * 8  # the rest of the machine took half its cores
    recovery_s, recovered = _judge(samples, shares)
    assert recovered and recovery_s == pytest.approx(3 * INTERVAL)


def test_a_cell_that_did_not_recover_still_fails_with_the_whole_machine_left_to_it():
    samples = BEFORE + (0.0, 0.0, 190.0, 200.0, 205.0, 198.0, 201.0, 199.0)
    assert _judge(samples, (1.0,) * 16) == (None, False)
    # A share under the floor is not scaled past it: a machine that left almost nothing says little.
    assert _judge(samples, (1.0,) * 8 + (0.05,) * 8)[1] is True
    assert scenarios.host_adjusted((100.0,), (0.05,)) == (100.0 / scenarios.MIN_HOST_SHARE,)
    assert scenarios.host_adjusted((100.0, 50.0), ()) == (100.0, 50.0)  # none measured: as they are


_HOG = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


class FakeMachine:
    """The machine's counters as ProgressWatch reads them: a neighbour computes on one core from
    `start` to `end` (monotonic); nothing else runs but the deployment, which idles."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def __call__(self) -> tuple[float, float]:
        now = time.monotonic()
        return max(0.0, min(now, self.end) - self.start), 0.0


def test_the_share_falls_by_the_cores_a_neighbour_takes_and_comes_back_after():
    deployment = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # it only sleeps
    start = time.monotonic() + 0.5
    try:
        with ProgressWatch(deployment.pid, interval_s=0.05, machine=FakeMachine(start, start + 1.0), cores=2) as watch:
            time.sleep(2.0)
            shares = watch.host_shares(start, 0.25, 7)
    finally:
        deployment.kill()
        deployment.wait()
    assert all(s == pytest.approx(0.5, abs=0.1) for s in shares[1:3]), shares  # one core of two taken
    assert shares[-1] == 1.0, shares  # given back


def test_the_machines_busy_time_counts_a_neighbours_cpu():
    before = machine_busy_s()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", _HOG, "0.5"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    hog_cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    assert hog_cpu > 0.1 and machine_busy_s() - before >= 0.9 * hog_cpu
