"""One child process, both ends: run it in its own process group, hand it a plan (JSON), get
exactly one JSON result back, with a deadline; the whole group is stopped whatever happened.

Modelled on pyperf's worker protocol (pyperf/_runner.py, _worker.py): the parent writes the plan,
the child writes one JSON result to a channel of its own (a file named on its command line, never
stdout, which stays free for its logs), and the parent validates it. The cell process
(cell_process.py) and the load drivers (driver.py) run this way.

- Parent: ``run_child`` (``run_in_group`` alone for a program that speaks no JSON, such as wrk).
- Child: ``child_main`` for ``python -m MODULE PLAN RESULT``; or ``read_plan``, then ``write_result`` once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from forkwise.errors import ChildFailed, ChildTimedOut, ConfigError, ForkwiseError
from forkwise.procs import ProcessGroup

OUTPUT_TAIL_CHARS = 2000  # of a child's stdout and stderr, what an error or a failed record keeps

T = TypeVar("T")
# How the parent starts a child: its argv, given the plan's path and the path for its result.
Command = Callable[[Path, Path], list[str]]


@dataclass(frozen=True)
class Deadline:
    """When a child must be done: `seconds` after `start` (time.monotonic())."""

    seconds: float
    start: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic())

    @property
    def at(self) -> float:
        return self.start + self.seconds

    def elapsed_s(self) -> float:
        return time.monotonic() - self.start


@dataclass(frozen=True)
class Exit:
    """How a child ended: its exit status, its CPU seconds (wait4: exact), all it wrote on stdout and stderr."""

    returncode: int
    cpu_s: float
    output: str

    @property
    def output_tail(self) -> str:
        return self.output[-OUTPUT_TAIL_CHARS:]


@dataclass(frozen=True)
class ChildRun(Generic[T]):
    """A child that handed back its result: the result, validated, and how it ended."""

    result: T
    exit: Exit


def run_in_group(argv: list[str], deadline: Deadline, log_path: Path, *, what: str, stop_grace_s: float,
                 env: dict[str, str] | None = None) -> Exit:
    """Run `argv` in its own process group, its stdout and stderr into `log_path`, until it exits or
    its deadline passes (ChildTimedOut). On the way out the whole group is stopped: SIGTERM, then
    SIGKILL for what outlives `stop_grace_s` (an interrupted child gets the grace to clean up)."""
    group = ProcessGroup(argv, dict(os.environ) if env is None else env, log_path).start()
    try:
        returncode = group.wait_until(deadline.at)
        if returncode is None:  # past its deadline it is stalled: no grace
            group.signal_group(signal.SIGKILL)
    finally:
        group.stop(grace_s=stop_grace_s)
    output = log_path.read_text(errors="replace")
    if returncode is None:
        raise ChildTimedOut(what, group.pid, deadline.seconds, output[-OUTPUT_TAIL_CHARS:])
    return Exit(returncode, group.cpu_s, output)


def run_child(command: Command, plan_json: str, deadline: Deadline, parse: Callable[[Any], T], *, what: str,
              stop_grace_s: float, env: dict[str, str] | None = None) -> ChildRun[T]:
    """The parent's side: write the plan, run the child (run_in_group), read its one result and
    validate it with `parse` (a ValueError or ForkwiseError from it: not a valid result).

    ChildTimedOut past the deadline; ChildFailed for a non-zero exit, no result, or one that is not
    valid JSON or that `parse` refuses."""
    with tempfile.TemporaryDirectory(prefix="forkwise-child-") as tmp:
        plan_path, result_path = Path(tmp) / "plan.json", Path(tmp) / "result.json"
        plan_path.write_text(plan_json)
        ended = run_in_group(command(plan_path, result_path), deadline, Path(tmp) / "output.log", what=what,
                             stop_grace_s=stop_grace_s, env=env)
        result_text = result_path.read_text() if result_path.exists() else ""
    if ended.returncode != 0 or not result_text:
        raise ChildFailed(what, ended.returncode, "", ended.output_tail)
    try:
        return ChildRun(parse(json.loads(result_text)), ended)
    except (ValueError, ForkwiseError) as exc:  # JSONDecodeError is a ValueError
        raise ChildFailed(what, ended.returncode, str(exc), ended.output_tail) from exc


def module_command(module: str) -> Command:
    """A Python module as the child: ``python -m MODULE PLAN RESULT`` (its entry: child_main)."""
    return lambda plan_path, result_path: [sys.executable, "-m", module, str(plan_path), str(result_path)]


# --- the child's side -------------------------------------------------------------------------


def read_plan(path: Path) -> str:
    """The plan's JSON text, as the parent wrote it."""
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the plan {path}: {exc.strerror}") from None


def write_result(path: Path, result_json: str) -> None:
    """Hand back the result whole or not at all: written beside `path`, then renamed onto it, so
    the parent never reads half of one (a child killed while writing leaves none)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(result_json)
    partial.replace(path)


def child_main(argv: list[str], work: Callable[[Any], Any]) -> int:
    """A child's entry for ``python -m MODULE PLAN RESULT``: run `work` once on the plan (its JSON
    value) and write what it returns as the one result."""
    plan_path, result_path = (Path(arg) for arg in argv)
    write_result(result_path, json.dumps(work(json.loads(read_plan(plan_path)))))
    return 0
