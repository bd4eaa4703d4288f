"""Is the host giving us its CPU right now? A CPU probe around every measured load level.

A shared virtual machine has slow spells: for seconds at a time the host runs our vCPUs at
about half speed, and every throughput measured then is low, whatever the code does (on the
2-core machine of the committed runs, 20% of 0.2-s probes over two idle minutes were at least
1.4x slower than the fastest, in runs of up to 6 s). The kernel shows no steal time, so the
matrix asks directly: a fixed pure-Python loop, timed.

A probe measures the host only while nothing of ours competes with it for the CPU: right after
a level, the server is still draining its queue (a model-server cell at concurrency 32 for a
good while), and a probe then measures the server, not the host. So every probe waits until the
deployment is idle (``wait_idle``: its processes' CPU time stops advancing), for at most as long
as the level that loaded it lasted; a probe that could not wait is not taken.

- ``RunReference`` (the ``forkwise matrix`` process): the run's reference, calibrated once over
  a quiet idle second of this host (the median probe: one fast moment must not make every later
  probe look slow) and re-based when every probe since is slower, which says the reference does
  not describe this host (a slower host, or a neighbour that left at calibration).
- ``QuietGate`` (the ``forkwise cell`` process, around each level): before a level it waits for
  an idle deployment, then, within a budget, for the probe to come back to speed; after the level
  it waits for an idle deployment and probes again. The level records the larger slowdown of
  the probes taken (``LoadLevel.host_slowdown``; 0 when none was); ``forkwise.matrix.analysis.launches``
  measures a cell's throughput from its launches that were not slow at that level, when there
  are any.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

from forkwise.matrix.records.types import HOST_SLOW_RATIO

PROBE_LOOPS = 200_000  # about 5.5 ms on the 2-core AMD EPYC: short next to a 1-s level
PROBES_PER_CHECK = 3  # the fastest of 3: one probe that the scheduler interrupts is not a spell
POLL_S = 0.1
MAX_WAIT_PER_LEVEL_S = 1.5
# A deployment is idle once its processes together use less than this share of one core over a
# poll: what is left is housekeeping (a master's loop, heartbeats), not requests. The CPU time the
# kernel reports moves in ticks of 10 ms, so this allows one tick a poll.
IDLE_CPU_SHARE = 0.15
# The reference is re-based once this many probes in a row, since the last (re)base, were slow.
REBASE_AFTER_PROBES = 6


def probe_ms(loops: int = PROBE_LOOPS) -> float:
    """Milliseconds one fixed loop of Python arithmetic takes on this CPU, now."""
    start = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i
    return (time.perf_counter() - start) * 1000.0


def check_ms(probes: int = PROBES_PER_CHECK) -> float:
    return min(probe_ms() for _ in range(probes))


def calibrate(seconds: float = 1.0) -> float:
    """The reference: the median check over `seconds` of this host, idle."""
    checks = [check_ms()]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(POLL_S / 2)
        checks.append(check_ms())
    return statistics.median(checks)


def wait_idle(cpu_seconds: Callable[[], float], deadline_s: float, poll_s: float = POLL_S) -> tuple[bool, float]:
    """Wait until the deployment whose CPU time `cpu_seconds` reads stops using the CPU, for at
    most `deadline_s` (at least one poll); returns (idle, seconds waited)."""
    start = time.monotonic()
    before = cpu_seconds()
    while True:
        time.sleep(poll_s)
        now = cpu_seconds()
        waited = time.monotonic() - start
        if now - before < IDLE_CPU_SHARE * poll_s:  # a process that exited lowers it: idle too
            return True, waited
        if waited >= deadline_s:
            return False, waited
        before = now


class RunReference:
    """The run's probe reference in milliseconds, kept describing this host.

    Calibrated when first asked for (a run with no load levels never probes). Each cell reports
    its levels' slowdowns against the reference it was given; once REBASE_AFTER_PROBES of them in
    a row were slow, the reference is multiplied by their median: a host where every probe is
    slow is simply that fast, and its slow spells are measured from there.
    """

    def __init__(self, calibrate: Callable[[], float] = calibrate):
        self._calibrate = calibrate
        self.calibrated_ms: float | None = None
        self.reference: float | None = None
        self.rebased = 0
        self._slow_run: list[float] = []

    def ms(self) -> float:
        if self.reference is None:
            self.calibrated_ms = self.reference = self._calibrate()
        return self.reference

    def observe(self, slowdowns: Iterable[float]) -> None:
        """One cell's levels' slowdowns (0: not probed, ignored), in order."""
        for ratio in slowdowns:
            if ratio <= 0:
                continue
            if ratio <= HOST_SLOW_RATIO:
                self._slow_run = []
                continue
            self._slow_run.append(ratio)
            if len(self._slow_run) >= REBASE_AFTER_PROBES and self.reference is not None:
                self.reference *= statistics.median(self._slow_run)
                self.rebased += 1
                self._slow_run = []


class QuietGate:
    """Waits for an idle deployment and a quiet host before a level, and says how slow the host
    was around it.

    `reference_ms` 0 calibrates here (a cell run on its own). `budget_s` caps all waiting for a
    quiet host in this process: once spent, levels start at once and still record their slowdown.
    `cpu_seconds` reads the deployment's CPU time (None: nothing to wait for).
    """

    def __init__(self, reference_ms: float = 0.0, budget_s: float = 10.0,
                 max_wait_s: float = MAX_WAIT_PER_LEVEL_S, cpu_seconds: Callable[[], float] | None = None):
        self.reference_ms = reference_ms if reference_ms > 0 else calibrate()
        self.budget_s = max(0.0, budget_s)
        self.max_wait_s = max_wait_s
        self.cpu_seconds = cpu_seconds
        self.waited_s = 0.0  # for a quiet host
        self.drained_s = 0.0  # for an idle deployment
        self._settled = False  # idle since the last level ended, and nothing ran since

    def ratio(self) -> float:
        return check_ms() / self.reference_ms

    def _idle(self, drain_s: float) -> bool:
        if self._settled or self.cpu_seconds is None:
            return True
        idle, waited = wait_idle(self.cpu_seconds, drain_s)
        self.drained_s += waited
        return idle

    def before(self, drain_s: float = 0.0) -> float | None:
        """Before a level: wait (up to `drain_s`) for the deployment to go idle, then (within both
        caps) for the probe to come back to speed; the last ratio seen, or None when the
        deployment never went idle (no probe taken)."""
        idle = self._idle(drain_s)
        self._settled = False  # the level starts now
        if not idle:
            return None
        ratio = self.ratio()
        start = time.monotonic()
        limit = min(self.max_wait_s, self.budget_s - self.waited_s)
        while ratio > HOST_SLOW_RATIO and time.monotonic() - start < limit:
            time.sleep(POLL_S)
            ratio = self.ratio()
        self.waited_s += time.monotonic() - start
        return ratio

    def after(self, drain_s: float = 0.0) -> float | None:
        """After a level that lasted `drain_s`: wait up to that long for the deployment to go
        idle, then probe; None when it never went idle."""
        if not self._idle(drain_s):
            return None
        self._settled = True
        return self.ratio()


def level_slowdown(*ratios: float | None) -> float:
    """The slowdown a level records: the largest of the probes taken around it; 0: none taken."""
    return max((r for r in ratios if r is not None), default=0.0)
