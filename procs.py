"""Process ownership: every process forkwise starts has an owner that stops it.

Servers run in their own session (process group), so the owner can stop the whole
tree by the group id it created, with a deadline, and then check that nothing of it
is left. Helpers started inside a deployment die with their parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM one child we started, wait up to grace_s, then SIGKILL it; always reaps it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def private_dir(path: Path) -> Path:
    """A directory only this user can enter (0700), created if needed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes whose process group is `pgid` (zombies excluded)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def tagged_processes(tag_var: str, tag: str) -> list[psutil.Process]:
    """Live processes whose environment carries tag_var=tag: descendants that changed group."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            if proc.environ().get(tag_var) == tag:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class ProcessGroup:
    """A command started in a new session; `stop()` ends its whole group, then checks.

    Used as a context manager, the group is stopped in `__exit__` whatever happened.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path | None, cwd: Path | None = None):
        """log_path None: the command writes to this process's stdout and stderr."""
        self.argv, self.env, self.log_path, self.cwd = argv, env, log_path, cwd
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.cpu_s = 0.0  # the command's CPU seconds, once wait_until() reaped it

    def start(self) -> ProcessGroup:
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115  (closed in finally; Popen may get None)
        try:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT if log else None,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            if log:
                log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The command's exit status; None before start() and while it runs."""
        return self.proc.returncode if self.proc is not None else None

    def wait(self) -> int:
        """Wait for the command to exit; its exit status."""
        assert self.proc is not None, "wait() on a group that was never started"
        return self.proc.wait()

    def wait_until(self, deadline_at: float) -> int | None:
        """Wait for the command to exit, at most until `deadline_at` (time.monotonic()): its exit
        status, or None while it still runs. Reaped with wait4, so `cpu_s` is exactly its CPU time."""
        assert self.proc is not None, "wait_until() on a group that was never started"
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:  # readable once the command exits: a wait without polling
            pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd on this kernel or sandbox: poll instead
            pidfd = None
        try:
            while True:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                    self.cpu_s = usage.ru_utime + usage.ru_stime
                    return self.proc.returncode
                left_s = deadline_at - time.monotonic()
                if left_s <= 0:
                    return None
                if pidfd is None:
                    time.sleep(min(0.01, left_s))
                else:
                    select.select([pidfd], [], [], left_s)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace_s: float = 10.0) -> list[int]:
        """SIGTERM the group, wait up to grace_s for all of it, SIGKILL what remains.

        Returns the pids that had to be killed (evidence for a record).
        """
        if self.proc is None:
            return []
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.proc.poll()
            if not group_members(self.pid):
                break
            time.sleep(0.1)
        killed = [p.pid for p in group_members(self.pid)]
        if killed:
            self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        end = time.monotonic() + 5
        while group_members(self.pid) and time.monotonic() < end:
            time.sleep(0.05)
        return killed

    def __enter__(self) -> ProcessGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def interrupts_held():
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends (main thread only:
    elsewhere Python delivers no signal anyway). The kernel's signal mask is left alone, so the
    programs started inside get signals as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])
