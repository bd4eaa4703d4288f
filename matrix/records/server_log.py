"""A server log read for an out-of-memory error: the evidence the OOM rule (``verdicts.judge_oom``)
reads. Pure: the log's text in, the telling line out. ``verdicts`` re-exports both names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What an out-of-memory error looks like in any server's log, whichever runtime raised it: XLA/JAX
# and TensorFlow (RESOURCE_EXHAUSTED), the CUDA driver, torch (torch.OutOfMemoryError, "CUDA out
# of memory"), and a host allocator ("out of memory"). A failing cell showing one is OOM. A server's
# own lines come with the log (LogSeen), from its adapter.
GENERIC_OOM_LINES = r"RESOURCE_EXHAUSTED|CUDA_ERROR_OUT_OF_MEMORY|OutOfMemoryError|out of memory|ResourceExhaustedError"


@dataclass(frozen=True)
class LogSeen:
    """The end of a server log, and what its server says about its own lines (regular expressions,
    from the server's adapter): which show an out-of-memory error, and which only read like one."""

    text: str
    oom_lines: tuple[str, ...] = ()
    oom_false_alarms: tuple[str, ...] = ()  # removed from a line before it is read for OOM (a guess)


def oom_evidence(log: LogSeen) -> str | None:
    """The first log line showing an out-of-memory error, or None."""
    oom = re.compile("|".join((GENERIC_OOM_LINES, *(f"(?:{p})" for p in log.oom_lines))), re.IGNORECASE)
    false_alarms = [re.compile(p) for p in log.oom_false_alarms]
    for line in log.text.splitlines():
        read = line
        for alarm in false_alarms:
            read = alarm.sub("", read)
        if oom.search(read):
            return line.strip()[:300]
    return None
