"""Where the app's life meets the server's processes.

``create_app`` runs in the master (preloaded) or in a worker (lazy). Either way every
worker must run its strategy's ``post_fork`` exactly once before serving: the server
adapters arrange a post-fork call (gunicorn ``post_worker_init``, uWSGI
``post_fork_hook``) that lands here, and ``worker_started`` is idempotent per pid.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

import numpy as np

from forkwise.config import AppSettings
from forkwise.errors import ModelUnavailable
from forkwise.model.spec import ModelSpec
from forkwise.strategies.base import Strategy
from forkwise.webapp.db import Database

log = logging.getLogger("forkwise.webapp")
# A worker whose warm-up found no model server tries again after this, doubling up to the most:
# it is ready within about WARM_UP_RETRY_MAX_S of the model server answering, with no traffic.
WARM_UP_RETRY_FIRST_S = 0.05
WARM_UP_RETRY_MAX_S = 1.0


class AppProcess:
    """The app's per-process state: built once, re-initialised in each forked worker."""

    def __init__(self, settings: AppSettings, spec: ModelSpec, strategy: Strategy, db: Database) -> None:
        self.settings, self.spec, self.strategy, self.db = settings, spec, strategy, db
        self._initialised_pid: int | None = None
        self._ready_pid: int | None = None
        self._lock = threading.Lock()
        self.not_ready_because = "the model has not answered in this process yet"
        self.stopping = threading.Event()  # set as the worker exits: background warm-ups end

    @property
    def ready(self) -> bool:
        """True once the model answered one inference in this very process."""
        return self._ready_pid == os.getpid()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread. A model that cannot answer (its model server
        died) makes the worker not ready until it answers again: a background warm-up retries, so a
        worker an orchestrator stopped sending requests to still comes back."""
        try:
            out = np.asarray(self.strategy.predict(batch), dtype=np.float32)
        except ModelUnavailable as exc:
            with self._lock:
                was_ready, self._ready_pid = self._ready_pid == os.getpid(), None
                self.not_ready_because = f"the model did not answer: {exc}"
            if was_ready:
                threading.Thread(target=self._retry_warm_up, name="forkwise-warm-up", daemon=True).start()
            raise
        if self._ready_pid != os.getpid():
            self._ready_pid = os.getpid()
        return out

    def master_preload(self) -> None:
        """Runs in the master, before fork."""
        if self.settings.db_in_master:
            self.db.touch()  # as apps that preload do: the engine's pool now holds a connection
        self.strategy.preload()
        if self.strategy.freeze_gc_before_fork:
            gc.collect()
            gc.freeze()

    def worker_started(self) -> None:
        """Runs in a worker, once, before its first request (idempotent per pid)."""
        with self._lock:
            if self._initialised_pid == os.getpid():
                return
            self._initialised_pid = os.getpid()
        self.strategy.post_fork()
        if self.strategy.warm_after_fork and not self.warm_up():
            # The model server may still be starting: keep trying in the background, so the
            # worker becomes ready (/readyz) without waiting for a request to reach it.
            log.warning("worker %d: %s; retrying in the background", os.getpid(), self.not_ready_because)
            threading.Thread(target=self._retry_warm_up, name="forkwise-warm-up", daemon=True).start()

    def warm_up(self) -> bool:
        """One inference on zeros; False, with the reason kept for /readyz, when the model cannot answer now."""
        try:
            self.predict(np.zeros((1, *self.spec.input_shape), np.float32))
            return True
        except ModelUnavailable as exc:
            self.not_ready_because = f"warm-up inference failed: {exc}"
            return False

    def _retry_warm_up(self) -> None:
        """A worker's background thread: warm up again, backing off, until the model answered once
        (a request may get there first) or the worker is stopping."""
        pause = WARM_UP_RETRY_FIRST_S
        while not self.ready and not self.stopping.wait(pause):
            if self.warm_up():
                log.warning("worker %d: the warm-up inference answered: ready", os.getpid())
                return
            pause = min(2 * pause, WARM_UP_RETRY_MAX_S)


_current: AppProcess | None = None


def install(app_process: AppProcess) -> None:
    global _current
    _current = app_process


def worker_started() -> None:
    """The server's post-fork hook calls this in each worker."""
    if _current is not None:
        _current.worker_started()


def worker_exit() -> None:
    """The server's worker-exit hook calls this in each worker."""
    if _current is not None:
        _current.stopping.set()
        _current.strategy.on_exit()


def master_exit() -> None:
    """The server's shutdown hook calls this in the master."""
    if _current is not None:
        _current.strategy.on_exit()
