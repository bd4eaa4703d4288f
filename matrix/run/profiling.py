"""Where the time goes: py-spy profiles of a cell's workers and model server under load.

Runs in the process of ``forkwise cell --profile-dir DIR``: while the highest load level
runs, one ``py-spy record`` per worker and model-server process samples its busy threads.
Each profile is kept as collapsed stacks (``*.folded``, for flame-graph tools) and
summarised into ``*.txt``: the functions that held the most samples, inclusive and self.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from forkwise.errors import ConfigError
from forkwise.matrix.records.roles import SERVING_ROLES
from forkwise.matrix.run import resources
from forkwise.procs import stop_process

TOP = 25

# How long py-spy may take to write its summaries once its sampling window ended.
FINISH_GRACE_S = 10.0


def find_py_spy() -> str | None:
    """py-spy on PATH, or installed beside this interpreter (a virtualenv that is not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def require_py_spy() -> str:
    path = find_py_spy()
    if path is None:
        raise ConfigError("--profile-dir needs py-spy on PATH: pip install 'forkwise[profile]' (or py-spy)")
    return path


def start(master_pid: int, out_dir: Path, duration_s: float, label: str) -> list[tuple[subprocess.Popen, Path]]:
    """One py-spy per worker and model server; the caller stops them with `finish`."""
    py_spy = require_py_spy()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for proc in resources.deployment_processes(master_pid):
        role = resources.role_of(proc, master_pid)
        if role not in SERVING_ROLES:
            continue
        path = out_dir / f"{label}.{role}-{proc.pid}.folded"
        cmd = [py_spy, "record", "--pid", str(proc.pid), "--duration", str(max(1, round(duration_s))),
               "--format", "raw", "--output", str(path), "--nonblocking", "--rate", "200"]
        started.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return started


def finish(started: list[tuple[subprocess.Popen, Path]], timeout_s: float) -> list[Path]:
    """Wait for each py-spy (bounded), then write the summaries; returns the summary paths."""
    summaries = []
    for proc, path in started:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_process(proc, grace_s=2)
        if path.exists():
            summary = path.with_suffix(".txt")
            summary.write_text(summarize(path.read_text()))
            summaries.append(summary)
    return summaries


def summarize(folded: str) -> str:
    """Collapsed stacks -> the top functions by inclusive and by self samples, as percentages."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples (the process was idle or exited)\n"
    lines = [f"{total} samples of busy threads", "", "inclusive  function"]
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in inclusive.most_common(TOP)]
    lines += ["", "self       function"]
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in own.most_common(TOP)]
    return "\n".join(lines) + "\n"
