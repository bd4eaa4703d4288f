"""Where a hung deployment is stuck: the stacks of its workers and model server, by py-spy.

Runs in the cell process (``forkwise cell``) while the deployment is still in its hung state,
before it is stopped. CPU time near 0 says a worker is blocked; its stack says on what (the lock
a forked runtime left held, a queue nobody feeds). Native frames are asked for first (the C++
side of a runtime is where a fork-unsafe lock sits), plain Python frames when that fails. Every
failure to get a stack is said in the evidence, never left out.
"""

from __future__ import annotations

import subprocess
import time

from forkwise.matrix.records.roles import SERVING_ROLES
from forkwise.matrix.run import resources
from forkwise.matrix.run.profiling import find_py_spy

LINES_KEPT = 80  # of one process's dump: its threads' innermost frames come first
LINE_CHARS = 200  # of one frame (a C++ template's name can run to a thousand)


def dump_stacks(master_pid: int, budget_s: float) -> tuple[str, ...]:
    """One entry per worker and model-server process ("ROLE PID:" then its stacks, or why there
    are none); `budget_s` bounds all the dumps together."""
    py_spy = find_py_spy()
    if py_spy is None:
        return ("no stacks: py-spy is not installed (pip install 'forkwise[profile]')",)
    deadline = time.monotonic() + budget_s
    found = []
    for proc in resources.deployment_processes(master_pid):
        role = resources.role_of(proc, master_pid)
        if role in SERVING_ROLES:
            found.append(f"{role} {proc.pid}:\n{_dump(py_spy, proc.pid, deadline)}")
    return tuple(found) or ("no stacks: no worker or model-server process was alive",)


def _dump(py_spy: str, pid: int, deadline: float) -> str:
    """`py-spy dump` of one process, native frames included when py-spy can read them."""
    failures = []
    for extra in (["--native"], []):
        label = "py-spy dump " + (" ".join(extra) or "(Python frames)")
        left = deadline - time.monotonic()
        if left <= 0:
            failures.append("the time for stacks ran out")
            break
        argv = [py_spy, "dump", "--pid", str(pid), *extra]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=left, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            failures.append(f"{label} gave no stacks within {left:.1f} s")
            continue
        if done.returncode == 0 and done.stdout.strip():
            note = f"\n(without native frames: {failures[0]})" if failures else ""
            return trim(done.stdout) + note
        why = (done.stderr or done.stdout).strip().splitlines()
        failures.append(f"{label} exited {done.returncode}: {why[-1] if why else 'no message'}")
    return "no stacks: " + "; ".join(failures)


def trim(dump: str, keep: int = LINES_KEPT) -> str:
    """The first `keep` lines of a dump, each cut at LINE_CHARS, and how many were left out."""
    lines = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " ..." for line in dump.rstrip().splitlines()]
    if len(lines) <= keep:
        return "\n".join(lines)
    return "\n".join(lines[:keep] + [f"... ({len(lines) - keep} more lines)"])
