"""forkwise.matrix.run.child: a child in its own process group hands back one JSON result, or the
parent says why not; tiny `python -c` children, no TensorFlow."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import psutil
import pytest

from forkwise.errors import ChildFailed, ChildTimedOut, ForkwiseError
from forkwise.matrix.run.child import Deadline, run_child, write_result
from forkwise.procs import group_members

# A child that answers its plan through the protocol's own child side.
DOUBLES = ("import sys; from forkwise.matrix.run.child import child_main; "
           "sys.exit(child_main(sys.argv[1:], lambda plan: {'doubled': plan['n'] * 2}))")
FAILS = "import sys; sys.stderr.write('boom: the plan was wrong\\n'); sys.exit(3)"
SILENT = "print('working, but handing nothing back')"
GARBLED = "import sys, pathlib; pathlib.Path(sys.argv[2]).write_text('{\"doubled\": ')"
# Starts a grandchild (it inherits the group), says its pid where the plan asks, then stalls.
STALLS = ("import json, pathlib, subprocess, sys, time; "
          "plan = json.loads(pathlib.Path(sys.argv[1]).read_text()); "
          "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); "
          "pathlib.Path(plan['pid_file']).write_text(str(grandchild.pid)); time.sleep(3600)")


def python(code: str):
    """The command of a `python -c` child, handed the plan's and the result's paths."""
    return lambda plan_path, result_path: [sys.executable, "-c", code, str(plan_path), str(result_path)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def start_s() -> float:
    """What a `python -c` child takes on this host to start, answer and exit: the tests' deadlines
    are multiples of it, not seconds tuned on one machine."""
    started = time.monotonic()
    run_child(python(DOUBLES), json.dumps({"n": 1}), Deadline.after(600), dict, what="calibration", stop_grace_s=1)
    return time.monotonic() - started


def test_a_child_hands_back_its_one_result(no_leftover_children):
    run = run_child(python(DOUBLES), json.dumps({"n": 21}), Deadline.after(600), dict, what="doubler",
                    stop_grace_s=1)
    assert run.result == {"doubled": 42}
    assert run.exit.returncode == 0 and run.exit.cpu_s > 0


def test_a_child_that_exits_non_zero_fails_with_its_status_and_its_output(no_leftover_children):
    with pytest.raises(ChildFailed) as info:
        run_child(python(FAILS), "{}", Deadline.after(600), dict, what="failing child", stop_grace_s=1)
    assert info.value.exit_code == 3 and info.value.problem == ""
    assert "failing child exited with code 3 without a result" in str(info.value)
    assert "boom: the plan was wrong" in info.value.output_tail and "boom" in str(info.value)
    assert isinstance(info.value, ForkwiseError)


def test_a_child_that_writes_no_result_fails_even_with_status_0(no_leftover_children):
    with pytest.raises(ChildFailed, match="silent child exited with code 0 without a result") as info:
        run_child(python(SILENT), "{}", Deadline.after(600), dict, what="silent child", stop_grace_s=1)
    assert "handing nothing back" in info.value.output_tail


def test_a_result_that_is_not_json_or_not_valid_fails_and_says_why(no_leftover_children):
    with pytest.raises(ChildFailed, match="garbling child wrote an invalid result: Expecting value") as info:
        run_child(python(GARBLED), "{}", Deadline.after(600), dict, what="garbling child", stop_grace_s=1)
    assert info.value.exit_code == 0 and info.value.problem.startswith("Expecting value")

    def refuse(value):
        raise ValueError(f"no 'tripled' in {sorted(value)}")

    with pytest.raises(ChildFailed, match=r"invalid result: no 'tripled' in \['doubled'\]"):
        run_child(python(DOUBLES), json.dumps({"n": 1}), Deadline.after(600), refuse, what="doubler", stop_grace_s=1)


def test_a_child_past_its_deadline_is_killed_with_its_whole_group(tmp_path, start_s, no_leftover_children):
    deadline_s = round(20 * start_s, 2)
    plan = json.dumps({"pid_file": str(tmp_path / "grandchild.pid")})
    started = time.monotonic()
    with pytest.raises(ChildTimedOut, match=f"stalling child .* ran past its deadline of {deadline_s:g} s") as info:
        run_child(python(STALLS), plan, Deadline.after(deadline_s), dict, what="stalling child", stop_grace_s=60)
    # Killed at once: a stalled child does not get the grace an interrupted one gets.
    assert time.monotonic() - started < deadline_s + 30
    assert info.value.deadline_s == deadline_s
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert group_members(info.value.pid) == [] and gone(info.value.pid) and gone(grandchild)


def test_an_interrupted_parent_stops_the_group_and_lets_the_interrupt_through(tmp_path, start_s,
                                                                               no_leftover_children):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(10 * start_s, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_child(python(STALLS), json.dumps({"pid_file": str(tmp_path / "grandchild.pid")}),
                      Deadline.after(600), dict, what="stalling child", stop_grace_s=5)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert gone(grandchild)


def test_a_result_is_written_whole_then_moved_into_place(tmp_path):
    path = tmp_path / "result.json"
    write_result(path, '{"a": 1}')
    write_result(path, '{"a": 2}')  # a second run of `forkwise cell --record-out` replaces the first
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_kernel_without_pidfd_is_polled_to_the_same_result(monkeypatch, no_leftover_children):
    monkeypatch.delattr(os, "pidfd_open")
    run = run_child(python(DOUBLES), json.dumps({"n": 2}), Deadline.after(600), dict, what="doubler", stop_grace_s=1)
    assert run.result == {"doubled": 4}
