"""Is the host giving us its CPU right now? A CPU probe around every measured load level.

A shared virtual machine has slow spells: for seconds at a time the host runs our vCPUs at
about half speed, and every throughput measured then is low, whatever the code does (on the
2-core machine of the committed runs, 20% of 0.2-s probes over two idle minutes were at least
1.4x slower than the fastest, in runs of up to 6 s). The kernel shows no steal time, so the
matrix asks directly: a fixed pure-Python loop, timed.

- ``calibrate`` (the ``forkwise matrix`` process, once per run): the reference, the fastest
  probe over a second.
- ``QuietGate`` (the ``forkwise cell`` process, around each level while the server is idle):
  before a level it waits, within a budget, for the probe to come back to speed; after the
  level it probes again. The level records the larger slowdown of the two
  (``LoadLevel.host_slowdown``); ``forkwise.matrix.launches`` measures a cell's throughput
  from its launches that were not slow at that level, when there are any.
"""

from __future__ import annotations

import time

from forkwise.matrix.records import HOST_SLOW_RATIO

PROBE_LOOPS = 200_000  # about 5.5 ms on the 2-core AMD EPYC: short next to a 1-s level
PROBES_PER_CHECK = 3  # the fastest of 3: one probe that the scheduler interrupts is not a spell
POLL_S = 0.1
MAX_WAIT_PER_LEVEL_S = 1.5


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
    """The reference: the fastest probe seen over `seconds`."""
    best = check_ms()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        best = min(best, check_ms())
        time.sleep(POLL_S / 2)
    return best


class QuietGate:
    """Waits for a quiet host before a level and says how slow it was around it.

    `reference_ms` 0 calibrates here (a cell run on its own); the reference only ever falls,
    to the fastest probe seen. `budget_s` caps all waiting of this process: once spent, levels
    start at once and still record their slowdown.
    """

    def __init__(self, reference_ms: float = 0.0, budget_s: float = 10.0,
                 max_wait_s: float = MAX_WAIT_PER_LEVEL_S):
        self.reference_ms = reference_ms if reference_ms > 0 else calibrate()
        self.budget_s = max(0.0, budget_s)
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0

    def ratio(self) -> float:
        ms = check_ms()
        self.reference_ms = min(self.reference_ms, ms)
        return ms / self.reference_ms

    def before(self) -> float:
        """Wait (within both caps) until the probe is back to speed; the last ratio seen."""
        ratio = self.ratio()
        start = time.monotonic()
        limit = min(self.max_wait_s, self.budget_s - self.waited_s)
        while ratio > HOST_SLOW_RATIO and time.monotonic() - start < limit:
            time.sleep(POLL_S)
            ratio = self.ratio()
        self.waited_s += time.monotonic() - start
        return ratio

    def after(self) -> float:
        return self.ratio()
