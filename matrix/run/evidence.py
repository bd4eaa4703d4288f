"""What a failing cell's server log and processes say: its telling lines, its hung workers.

The verdict rules that read a log (out-of-memory evidence) are in forkwise.matrix.verdicts.
"""

from __future__ import annotations

import re
from pathlib import Path

from forkwise.logs import distinct_lines
from forkwise.matrix.records.types import Memory

OOM_LOG_BYTES = 4 << 20  # read at most the last 4 MiB of a log for OOM evidence


# Lines of a server log that say why a cell failed, wherever they sit in it: an exception's
# message, a fatal signal or abort, a runtime's failed check or CUDA error, and the server's own
# word on a worker (gunicorn's WORKER TIMEOUT, uWSGI's "DAMN ! worker ... died"), and a
# framework's warning that a fork will deadlock.
TELLING_PATTERN = re.compile(
    r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception): |Cannot re-initialize|Fatal Python error|Check failed"
    r"|CUDA_ERROR_\w+|\bSIG(?:ABRT|SEGV|BUS|ILL|KILL)\b|WORKER TIMEOUT|Worker failed to boot"
    r"|worker \d+ \(pid: \d+\) died|RESOURCE_EXHAUSTED|out of memory|Segmentation fault|Aborted"
    r"|deadlock"  # JAX warns so when the process that initialised it forks
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
HIGHLIGHTS_KEPT = 8


def log_highlights(log_text: str, keep: int = HIGHLIGHTS_KEPT) -> tuple[str, ...]:
    """The first `keep` distinct telling lines of a log, each once, with how often it recurred.

    Lines that differ only in numbers (pids, times, addresses) count as the same line.
    """
    return distinct_lines(log_text, TELLING_PATTERN, keep, strip=ANSI_ESCAPE)


def hung_workers_finding(memory: Memory) -> str:
    """What the workers of a hung cell were doing: CPU time near 0 means blocked (a lock, a
    deadlock after fork), not busy computing."""
    workers = [p for p in memory.processes if p.role == "worker"]
    if not workers:
        return "no worker process was alive while the request hung"
    cpu = ", ".join(f"{p.cpu_s:.2f} s (pid {p.pid})" for p in workers)
    return f"CPU time of each worker from its fork to the hang: {cpu}"


def read_log_end(path: Path | None) -> str:
    """The last OOM_LOG_BYTES of a log, as text; "" when there is none."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - OOM_LOG_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
