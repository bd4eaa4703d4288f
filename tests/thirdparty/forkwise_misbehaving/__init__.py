"""Strategies that misbehave on purpose, each in exactly one way, for the end-to-end verdict tests.

None loads a model (no TensorFlow: each cell stays cheap). Like forkwise's own `control`, they
answer a constant (`serves_model = False`), so verification checks that constant; each then
breaks one promise a deployment makes. forkwise judges them by what it observes, never by name.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import threading
import time

import numpy as np

from forkwise.errors import ModelUnavailable
from forkwise.strategies.base import Strategy


class Correct(Strategy):
    """Keeps every promise: a third party's strategy judged OK like a built-in one."""

    name = "thirdparty-correct"
    summary = "a team's strategy that answers the constant, correctly"
    serves_model = False
    warm_after_fork = False  # predict runs for requests only: each misbehaviour starts with them

    def constant_output(self) -> np.ndarray:
        return np.zeros(self.spec.output_shape, np.float32)

    def predict(self, batch):
        """Runs in a worker, on the request's thread."""
        return np.broadcast_to(self.constant_output(), (len(batch), *self.spec.output_shape))


class WrongAnswers(Correct):
    """Answers 1 where the reference says 0: WRONG."""

    name = "thirdparty-wrong"

    def predict(self, batch):
        return super().predict(batch) + 1.0


class ServerError(Correct):
    """Every request raises inside the handler: a 500 (ERROR)."""

    name = "thirdparty-500"

    def predict(self, batch):
        raise RuntimeError("thirdparty-500 fails every request on purpose")


_never = threading.Event()


class BlocksForever(Correct):
    """Every request waits on an event nobody sets: no answer, no CPU used (HANG)."""

    name = "thirdparty-hang"

    def predict(self, batch):
        _never.wait()
        return super().predict(batch)


class BlocksOneWorker(Correct):
    """One worker blocks for good on its BLOCK_AFTER-th request (after verification, under load),
    on an event nobody sets; the other workers go on serving: a worker hung while the deployment
    computes (HANG, on that worker's own CPU time)."""

    name = "thirdparty-hang-one-worker"
    BLOCK_AFTER = 200  # past every worker's share of the verification requests (32, and rounds until all answered)
    _served = 0

    def predict(self, batch):
        BlocksOneWorker._served += 1
        if BlocksOneWorker._served == self.BLOCK_AFTER and self._first_to_block():
            _never.wait()
        return super().predict(batch)

    def _first_to_block(self) -> bool:
        """Only the first worker to get here blocks: it holds this lock for good."""
        self._lock = open(self.settings.run_dir / "thirdparty-hang-one-worker.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class WorkerExits(Correct):
    """A worker exits on its fifth request: workers die and are respawned (CRASH)."""

    name = "thirdparty-exit"
    _served = 0

    def predict(self, batch):
        WorkerExits._served += 1
        if WorkerExits._served >= 5:
            os._exit(1)  # not 3 or 4: gunicorn reads those as a failed boot and stops altogether
        return super().predict(batch)


class NeverReady(Correct):
    """Says 'retry later' (503) to every request, forever: never ready (BOOT)."""

    name = "thirdparty-never-ready"

    def predict(self, batch):
        raise ModelUnavailable("thirdparty-never-ready never loads its model")


def _database(settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=30)


class LosesARow(Correct):
    """Once per worker, deletes the first row written, long acknowledged to its client (LOST). (Not
    the last: SQLite gives a deleted highest id to the next row, which would stand in for it.)"""

    name = "thirdparty-lose-row"
    _deleted = False

    def predict(self, batch):
        if not LosesARow._deleted:
            with _database(self.settings) as db:
                LosesARow._deleted = db.execute(
                    "DELETE FROM predictions WHERE id = (SELECT MIN(id) FROM predictions)").rowcount > 0
        return super().predict(batch)


class WritesAnExtraRow(Correct):
    """Once per worker, writes a row no request asked for: a row nobody acknowledged (LOST)."""

    name = "thirdparty-extra-row"
    _written = False

    def predict(self, batch):
        if not WritesAnExtraRow._written:
            with _database(self.settings) as db:
                db.execute("INSERT INTO predictions (input_digest, output, worker_pid, strategy, created_at) "
                           "VALUES (?, ?, ?, ?, ?)", ("0" * 64, json.dumps([0.0]), os.getpid(), self.name, time.time()))
            WritesAnExtraRow._written = True
        return super().predict(batch)


class OneWorkerOnly(Correct):
    """Workers take a lock no one releases before serving: only the first ever answers (WRONG)."""

    name = "thirdparty-one-worker"

    def post_fork(self):
        self._lock = open(self.settings.run_dir / "thirdparty-one-worker.lock", "w")  # noqa: SIM115  (held for good)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # the second worker waits here for good


class ReadyTooSoon(Correct):
    """Its warm-up inference answers, so /readyz says ready at once, but every request answers 503
    for its first UNAVAILABLE_S: a ready endpoint that is true while the deployment fails (ERROR)."""

    name = "thirdparty-ready-too-soon"
    warm_after_fork = True
    UNAVAILABLE_S = 2.5

    def post_fork(self):
        self._started = time.monotonic()

    def predict(self, batch):
        if not np.any(batch) or time.monotonic() - self._started >= self.UNAVAILABLE_S:  # the warm-up is zeros
            return super().predict(batch)
        raise ModelUnavailable("thirdparty-ready-too-soon: not serving yet, whatever /readyz says")


_SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"
# Starts the spinners in their own session and exits at once: they are nobody's in the deployment.
_LAUNCH = ("import os, subprocess, sys\nfor _ in range(os.cpu_count() or 1):\n"
           "    subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], start_new_session=True)\n")


class NeighbourAfterRespawn(Correct):
    """Keeps every promise, but a worker started well after the first ones (the one a kill-worker
    scenario's master starts in place of the killed one) starts a busy neighbour: one process
    spinning on each core for NEIGHBOUR_S, outside the deployment's process tree, each ending by
    itself. The rate after the event falls with the cores the neighbour takes, not with anything
    the deployment did: recovery judged against what the host allowed keeps the cell OK."""

    name = "thirdparty-neighbour-after-respawn"
    RESPAWN_AFTER_S = 2.0  # the first workers start together; the scenario's event comes seconds later
    NEIGHBOUR_S = 6.0

    def post_fork(self):
        marker = self.settings.run_dir / "thirdparty-first-worker-started"
        with open(marker, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            first = f.read()
            if not first:
                f.write(str(time.time()))
        if first and time.time() - float(first) > self.RESPAWN_AFTER_S:
            import subprocess

            subprocess.run([sys.executable, "-c", _LAUNCH, _SPIN, str(self.NEIGHBOUR_S)], check=True)


class OutOfMemory(Correct):
    """Every request fails with an allocator's out-of-memory error in the log (OOM)."""

    name = "thirdparty-oom"

    def predict(self, batch):
        print("thirdparty-oom: CUDA out of memory. Tried to allocate 20.00 GiB", file=sys.stderr, flush=True)
        raise MemoryError("thirdparty-oom: out of memory on purpose")


class LeaksMemory(Correct):
    """Keeps LEAK_BYTES of every request for good (a per-request cache never evicted): it answers
    correctly, and its workers' memory grows with the requests they served (LEAK under a soak)."""

    name = "thirdparty-leak"
    LEAK_BYTES = 16 * 1024  # written, not just reserved: the pages count in RSS
    MAX_KEPT = 16 * 1024  # at most 256 MiB per worker, whatever the soak's length
    _kept: list[bytes] = []

    def predict(self, batch):
        if len(LeaksMemory._kept) < self.MAX_KEPT:
            LeaksMemory._kept.append(b"\x01" * self.LEAK_BYTES)
        return super().predict(batch)
