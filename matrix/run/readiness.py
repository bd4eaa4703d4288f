"""Does /readyz tell the truth? Polled beside the real requests, through boot and a disruption.

Runs in the cell process (``forkwise cell``). An orchestrator routes traffic by a readiness
probe: one that says "ready" while every request fails sends users to a broken deployment, one
that says "not ready" while it serves takes a working one out. So a thread polls GET /readyz
every POLL_S, with the cell's request timeout as the probe's (no answer in time counts as not
ready, as a probe's timeout does), and what it said is set against what the deployment answered:

- at boot, against the first correct answer (the cold start): said ready before it answered
  (``boot_ready_early_s``), or answered before it said ready (``boot_ready_late_s``);
- in a disruption's window, interval by interval (0.25 s), against the load's own answers:
  said ready in an interval without a single 200 (``ready_while_failing_s``), said not ready in
  one with 200s (``not_ready_while_serving_s``), and the longest such stretch.

Steady load levels are not polled: the probe's requests would share the deployment with the
measured load. The arithmetic is pure (``boot_truth``, ``window_truth``); the rule that fails a
cell on it is in ``matrix.verdicts``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from forkwise.matrix.records.types import BootReadiness, WindowReadiness
from forkwise.matrix.run.http import request

POLL_S = 0.1
READY, NOT_READY, NO_ANSWER = "ready", "not ready", "no answer"

Poll = tuple[float, str]  # (monotonic time the poll was sent, what it said)


class ReadinessWatch:
    """Polls /readyz in a thread while in its `with` block; ``polls`` holds what each poll said."""

    def __init__(self, host: str, port: int, timeout_s: float, poll_s: float = POLL_S):
        self.host, self.port, self.timeout_s, self.poll_s = host, port, timeout_s, poll_s
        self.polls: list[Poll] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="forkwise-readiness")

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            reply = request(self.host, self.port, "GET", "/readyz", timeout_s=self.timeout_s)
            said = READY if reply.kind == "ok" else NOT_READY if reply.status is not None else NO_ANSWER
            self.polls.append((sent, said))
            self._stop.wait(max(0.0, self.poll_s - (time.monotonic() - sent)))

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# A lie at boot is seen only between the cell's own tries, made every FIRST_ANSWER_RETRY_S (after a
# failed one) and the probe's polls, every POLL_S: shorter than both together, it is not told apart.
FIRST_ANSWER_RETRY_S = 0.2
BOOT_RESOLUTION_S = 2 * (POLL_S + FIRST_ANSWER_RETRY_S)


def boot_truth(polls: Sequence[Poll], launched_at: float,
               tries: Sequence[tuple[float, float, bool]]) -> BootReadiness:
    """What /readyz said at boot against the cell's first-answer tries ((sent, answered: seconds after
    launch; correct)): said ready while a try sent after it still failed (from the first "ready" to the
    last such try), or had answered correctly before it said ready (until it did, or the last poll)."""
    ready = next((at - launched_at for at, said in polls if said == READY), None)
    failed = [sent for sent, _, ok in tries if not ok and ready is not None and sent >= ready]
    early = max(failed) - ready if failed and ready is not None else 0.0
    first_ok = min((answered for _, answered, ok in tries if ok), default=None)
    until = ready if ready is not None else (polls[-1][0] - launched_at if polls else None)
    late = until - first_ok if first_ok is not None and until is not None else 0.0
    return BootReadiness(len(polls), None if ready is None else round(ready, 2), round(max(0.0, early), 2),
                         round(max(0.0, late), 2))


def window_truth(polls: Sequence[Poll], start: float, interval_s: float,
                 rps_samples: Sequence[float]) -> WindowReadiness:
    """Interval by interval from monotonic `start`: what most of the interval's polls said against
    whether the load got a single 200 in it (an interval without a poll is left out)."""
    failing = serving_not_ready = longest = run = counted = 0
    for i, rate in enumerate(rps_samples):
        lo, hi = start + i * interval_s, start + (i + 1) * interval_s
        said = [s for at, s in polls if lo <= at < hi]
        if not said:
            run = 0
            continue
        counted += len(said)
        ready = said.count(READY) * 2 > len(said)
        failing += ready and rate <= 0
        serving_not_ready += not ready and rate > 0
        run = run + 1 if ready == (rate <= 0) else 0
        longest = max(longest, run)
    return WindowReadiness(counted, round(failing * interval_s, 2), round(serving_not_ready * interval_s, 2),
                           round(longest * interval_s, 2))
