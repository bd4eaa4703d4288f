"""Is a deployment computing or blocked? The evidence a HANG needs, whatever the host's speed.

Runs in the cell process (``forkwise cell``), which watches the deployment from outside. A
request that has no answer yet says nothing by itself: on a slower host TensorFlow's import
alone can outlive any fixed timeout. What tells a hung deployment from a slow one is its CPU
time: a worker blocked on a lock a forked runtime left held uses none, a worker importing or
computing uses a core's worth. So a request is given up on only when, over the last slice of
waiting, the deployment (master, workers, model server) did not use a measurable share of a
core; a slow host stretches the wait but does not change that verdict.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import psutil

from forkwise.matrix.records.roles import MODEL_SERVER, WORKER
from forkwise.matrix.run import resources

# Below this share of one core over a slice of waiting, the deployment is blocked, not computing.
# A blocked deployment's CPU does not grow with the slice (its masters' heartbeats cost well under
# 1% of a core); a computing one's grows with it (a core, or half of one on a host shared with a
# busy neighbour), so the share tells them apart on a fast host and a slow one alike.
STALLED_CORE_SHARE = 0.05
SAMPLE_EVERY_S = 0.2
KEPT_SAMPLES = 6000  # 20 minutes of samples: longer than any cell


class Sample(NamedTuple):
    at: float  # monotonic time
    cpu: float  # the deployment's CPU seconds so far (each process's growth added up)
    model_cpu: float  # of which the model servers'
    others: float  # CPU seconds the rest of the machine took so far: neither the deployment nor this process
    workers: dict[int, float]  # each worker's own CPU time


class ProgressWatch:
    """Samples the deployment's CPU time in a thread; answers how much it used since a moment.

    Progress adds each process's own growth, so a process that exits (a respawned worker, a
    helper program TensorFlow ran) takes nothing back, and a new one adds what it used. Each
    worker's own CPU time is kept too: a worker blocked on a lock while another one computes
    leaves the deployment "computing", but that worker made no progress (``longest_worker_stall_s``).
    """

    def __init__(self, master_pid: int, interval_s: float = SAMPLE_EVERY_S,
                 machine: Callable[[], tuple[float, float]] | None = None, cores: int | None = None):
        self.master_pid, self.interval_s = master_pid, interval_s
        # (the machine's busy CPU seconds, this process's CPU seconds): the rest of the machine's share
        self._read_machine = machine or machine_and_own_cpu_s
        self.cores = cores or psutil.cpu_count() or 1
        self._last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._total = 0.0
        self._model_total = 0.0  # the model servers' growth: what a waiting worker may be waiting on
        self._others_total = 0.0
        self._machine: tuple[float, float] | None = None  # the machine's busy CPU seconds, this process's
        self._samples: deque[Sample] = deque(maxlen=KEPT_SAMPLES)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="forkwise-progress")

    def _role(self, proc: psutil.Process) -> str:
        """The process's role, asked once (it reads the command line); an unknown one is asked again."""
        role = self._roles.get(proc.pid) or resources.role_of(proc, self.master_pid)
        if role != "unknown":
            self._roles[proc.pid] = role
        return role

    def _sample(self) -> None:
        now: dict[int, float] = {}
        roles: dict[int, str] = {}
        for proc in resources.deployment_processes(self.master_pid):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            now[proc.pid], roles[proc.pid] = times.user + times.system, self._role(proc)
        machine = self._read_machine()
        with self._lock:
            grown = {pid: max(0.0, cpu - self._last.get(pid, 0.0)) for pid, cpu in now.items()}
            self._last = now
            self._total += sum(grown.values())
            self._model_total += sum(g for pid, g in grown.items() if roles[pid] == MODEL_SERVER)
            if self._machine is not None:  # the rest of the machine: its growth less ours and the deployment's
                mine = sum(grown.values()) + (machine[1] - self._machine[1])
                self._others_total += max(0.0, machine[0] - self._machine[0] - mine)
            self._machine = machine
            workers = {pid: cpu for pid, cpu in now.items() if roles[pid] == WORKER}
            self._samples.append(Sample(time.monotonic(), self._total, self._model_total, self._others_total, workers))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def cpu_used(self, since: float) -> float:
        """CPU seconds the deployment used from monotonic time `since` to the last sample."""
        with self._lock:
            if not self._samples:
                return 0.0
            before = [sample.cpu for sample in self._samples if sample.at <= since]
            start = before[-1] if before else self._samples[0].cpu
            return self._samples[-1].cpu - start

    def computing(self, window_s: float) -> bool:
        """Did the deployment use at least STALLED_CORE_SHARE of a core over the last `window_s`?"""
        self._sample()
        return self.cpu_used(time.monotonic() - window_s) >= STALLED_CORE_SHARE * window_s

    def _within(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [sample for sample in self._samples if start <= sample.at <= end]

    def longest_idle_s(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] (monotonic) over which the deployment used less
        than STALLED_CORE_SHARE of a core: how long it stood blocked, if ever. Sample-bounded."""
        return longest_stall([(sample.at, (sample.cpu,)) for sample in self._within(start, end)])

    def longest_worker_stall_s(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] over which one worker used less than
        STALLED_CORE_SHARE of a core while the model servers (what a worker may wait on) did not
        compute either: a worker blocked, whatever the other workers did. Only the load's own
        requests can be held by it, so this counts as a hang's evidence only beside requests that
        got no answer (``verdicts``)."""
        samples = self._within(start, end)
        longest = 0.0
        for pid in {pid for sample in samples for pid in sample.workers}:
            points = [(x.at, (x.workers[pid], x.model_cpu)) for x in samples if pid in x.workers]
            longest = max(longest, longest_stall(points))
        return longest

    def host_shares(self, start: float, interval_s: float, count: int) -> tuple[float, ...]:
        """Per interval of `interval_s` from monotonic `start`: the share of the machine's cores the
        rest of the machine (a neighbour, the hypervisor's steal) left to the deployment and its
        load, over the samples that bound the interval: 1.0 on a machine that is otherwise idle."""
        samples = self._within(start - 2 * self.interval_s, start + (count + 2) * interval_s)
        if not samples:
            return (1.0,) * count
        shares = []
        for i in range(count):
            lo, hi = start + i * interval_s, start + (i + 1) * interval_s
            first = next((x for x in reversed(samples) if x.at <= lo), samples[0])
            last = next((x for x in samples if x.at >= hi), samples[-1])
            span = last.at - first.at
            taken = (last.others - first.others) / (self.cores * span) if span > 0 else 0.0
            shares.append(round(min(1.0, max(0.0, 1.0 - taken)), 3))
        return tuple(shares)

    def __enter__(self) -> ProgressWatch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot: every core's time not idle, the
    hypervisor's steal included (guest time is already in user time)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def machine_and_own_cpu_s() -> tuple[float, float]:
    """(the machine's busy CPU seconds, this process's own: the load driver's threads and the watch)."""
    own = psutil.Process().cpu_times()
    return machine_busy_s(), own.user + own.system


def longest_stall(points: Sequence[tuple[float, tuple[float, ...]]]) -> float:
    """The longest stretch between two points over which every one of the counters (CPU seconds,
    non-decreasing) grew by less than STALLED_CORE_SHARE of a core. A window's few hundred samples:
    n^2 is cheap."""
    longest = 0.0
    for i, (start_at, start_values) in enumerate(points):
        for end_at, end_values in points[i + 1:]:
            limit = STALLED_CORE_SHARE * (end_at - start_at)
            if all(e - s < limit for s, e in zip(start_values, end_values, strict=True)):
                longest = max(longest, end_at - start_at)
    return longest
