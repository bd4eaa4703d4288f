"""Memory and CPU of every process of a deployment, through psutil; GPU memory through NVML.

Runs in the cell process (``forkwise cell``), which watches the deployment from outside.
"""

from __future__ import annotations

from typing import Any

import psutil

from forkwise import gpu
from forkwise.matrix.records.roles import HELPER, MASTER, MODEL_SERVER, SUPERVISOR, WORKER
from forkwise.matrix.records.soak import SoakProcess
from forkwise.matrix.records.types import Memory, ProcessMemory

_MB = 1024 * 1024



def deployment_processes(master_pid: int) -> list[psutil.Process]:
    try:
        master = psutil.Process(master_pid)
        return [master, *master.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def role_of(proc: psutil.Process, master_pid: int) -> str:
    """master | worker | model-server | supervisor, or helper: a short-lived program a process ran
    (ldconfig, uname: TensorFlow's import runs such), which must not count as a worker that died."""
    if proc.pid == master_pid:
        return MASTER
    try:
        cmdline = " ".join(proc.cmdline())
        same_program = proc.exe() == psutil.Process(master_pid).exe()
    except psutil.Error:
        return "unknown"
    if "forkwise.modelserver.supervisor" in cmdline:
        return SUPERVISOR
    if "forkwise.modelserver.server" in cmdline:
        return MODEL_SERVER
    return WORKER if same_program else HELPER


def _memory_mb(info: Any) -> dict[str, float]:
    """RSS, USS and PSS in MB of psutil's memory_full_info (PSS as USS where the kernel gives none)."""
    return {"rss_mb": round(info.rss / _MB, 1), "uss_mb": round(info.uss / _MB, 1),
            "pss_mb": round(getattr(info, "pss", info.uss) / _MB, 1)}


def measure_memory(master_pid: int) -> Memory:
    """Every process of the deployment. gpu_mb: None on a host without a GPU, else what NVML
    (or nvidia-smi) says the process holds, 0 when it holds none."""
    on_gpu = gpu.process_memory_mb()
    found = []
    for proc in deployment_processes(master_pid):
        try:
            info = proc.memory_full_info()
            cpu = proc.cpu_times()
        except psutil.Error:
            continue
        found.append(
            ProcessMemory(
                role=role_of(proc, master_pid),
                pid=proc.pid,
                **_memory_mb(info),
                cpu_s=round(cpu.user + cpu.system, 2),
                gpu_mb=None if on_gpu is None else round(on_gpu.get(proc.pid, 0.0), 1),
            )
        )
    return Memory.of(found)


def soak_sample(master_pid: int) -> tuple[SoakProcess, ...]:
    """Every live process of the deployment now: its memory (RSS, PSS, USS) and open descriptors."""
    found = []
    for proc in deployment_processes(master_pid):
        try:
            info, fds = proc.memory_full_info(), proc.num_fds()
        except psutil.Error:
            continue  # it ended between the listing and the reading
        found.append(SoakProcess(role=role_of(proc, master_pid), pid=proc.pid, **_memory_mb(info), fds=fds))
    return tuple(found)


def cpu_seconds(master_pid: int) -> float:
    """User+system CPU of every live process of the deployment."""
    total = 0.0
    for proc in deployment_processes(master_pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def worker_pids(master_pid: int) -> set[int]:
    """The master's direct children that are web workers (not the model-server supervisor)."""
    try:
        children = psutil.Process(master_pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if role_of(c, master_pid) == "worker"}


class WorkerWatch:
    """Polls the master's workers in a thread: which were ever seen, which vanished.

    A worker that vanished while the master lived, or more distinct workers than
    configured, means workers died or were respawned.
    """

    def __init__(self, master_pid: int, interval_s: float = 0.1):
        import threading

        self.master_pid, self.interval_s = master_pid, interval_s
        self.seen: list[int] = []
        self.vanished: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # A child the master forked to run another program (the model server's supervisor) looks
        # like a worker until it execs: a pid counts as a worker only once two polls in a row saw
        # it as one, so such a child is never "a worker that vanished".
        alive: set[int] = set()
        candidates: set[int] = set()
        while not self._stop.is_set():
            polled = worker_pids(self.master_pid)
            if not polled and not psutil.pid_exists(self.master_pid):
                break
            now = (polled & candidates) | (polled & alive)
            candidates = polled - now
            for pid in sorted(now - alive):
                if pid not in self.seen:
                    self.seen.append(pid)
            self.vanished.extend(sorted(alive - now))
            alive = now
            self._stop.wait(self.interval_s)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
