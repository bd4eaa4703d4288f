"""What a cell's server log and a failing cell's processes say: the log's telling lines, the hung workers.

Each server's own patterns come from its adapter (ServerAdapter.telling_log_lines, oom_log_lines);
the verdict rules that read a log (out-of-memory evidence) are in forkwise.matrix.verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from forkwise.logs import distinct_lines
from forkwise.matrix.records.types import Memory
from forkwise.matrix.verdicts import Judgement, LogSeen, judge_oom
from forkwise.servers import ServerAdapter

OOM_LOG_BYTES = 4 << 20  # read at most the last 4 MiB of a log for OOM evidence


# Lines of any server's log that say why a cell failed, wherever they sit in it: an exception's
# message, a fatal signal or abort, a runtime's failed check or CUDA error, and a framework's
# warning that a fork will deadlock. Each server adds its own word on its workers
# (ServerAdapter.telling_log_lines: gunicorn's WORKER TIMEOUT, uWSGI's "DAMN ! worker ... died").
GENERIC_TELLING_LINES = (
    r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception): |Cannot re-initialize|Fatal Python error|Check failed"
    r"|CUDA_ERROR_\w+|\bSIG(?:ABRT|SEGV|BUS|ILL|KILL)\b|RESOURCE_EXHAUSTED|out of memory|Segmentation fault|Aborted"
    r"|deadlock"  # JAX warns so when the process that initialised it forks
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
HIGHLIGHTS_KEPT = 8


def telling_pattern(server_lines: Sequence[str] = ()) -> re.Pattern:
    """The generic telling lines and a server's own (its adapter's `telling_log_lines`)."""
    return re.compile("|".join((GENERIC_TELLING_LINES, *(f"(?:{line})" for line in server_lines))))


def log_highlights(log_text: str, server_lines: Sequence[str] = (), keep: int = HIGHLIGHTS_KEPT) -> tuple[str, ...]:
    """The first `keep` distinct telling lines of a log, each once, with how often it recurred:
    generic ones and those of `server_lines`, the patterns of the server that wrote the log.

    Lines that differ only in numbers (pids, times, addresses) count as the same line.
    """
    return distinct_lines(log_text, telling_pattern(server_lines), keep, strip=ANSI_ESCAPE)


def server_log_evidence(judgement: Judgement, log_path: Path | None,
                        server: ServerAdapter) -> tuple[Judgement, tuple[str, ...]]:
    """A cell's server log, read with the patterns of the server that wrote it: its telling lines
    (an OK cell's too: what the server said is evidence either way) and, for a failing cell, the
    OOM verdict when the log shows an out-of-memory error."""
    log_text = read_log_end(log_path)
    seen = LogSeen(log_text, server.oom_log_lines, server.oom_false_alarms)
    return judge_oom(judgement, seen), log_highlights(log_text, server.telling_log_lines)


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
