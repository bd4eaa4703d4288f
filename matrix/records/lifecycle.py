"""A deployment's lifecycle as a cell saw it: what its readiness probe said against what it answered."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BootReadiness:
    """What GET /readyz said from launch to the end of verification, against the deployment's first
    correct answer (matrix.run.readiness)."""

    polls: int
    ready_after_s: float | None  # from launch to the first "ready" (None: never said)
    ready_early_s: float  # said ready this long before a request sent then was answered correctly
    ready_late_s: float  # answered correctly this long before it first said ready


@dataclass(frozen=True)
class WindowReadiness:
    """What GET /readyz said through a disruption's window, interval by interval, against whether
    the load got a single 200 in the interval (matrix.run.readiness)."""

    polls: int
    ready_while_failing_s: float
    not_ready_while_serving_s: float
    longest_lie_s: float  # the longest stretch in which it said the opposite of what was
