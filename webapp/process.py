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

from forkwise.errors import ModelUnavailable

log = logging.getLogger("forkwise.webapp")


class AppProcess:
    """The app's per-process state: built once, re-initialised in each forked worker."""

    def __init__(self, settings, spec, strategy, db):
        self.settings, self.spec, self.strategy, self.db = settings, spec, strategy, db
        self._initialised_pid: int | None = None
        self._ready_pid: int | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once the model answered one inference in this very process."""
        return self._ready_pid == os.getpid()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread."""
        out = np.asarray(self.strategy.predict(batch), dtype=np.float32)
        if self._ready_pid != os.getpid():
            self._ready_pid = os.getpid()
        return out

    def master_preload(self) -> None:
        """Runs in the master, before fork."""
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
        if self.strategy.warm_after_fork:
            try:
                self.predict(np.zeros((1, *self.spec.input_shape), np.float32))
            except ModelUnavailable as exc:
                # Not fatal: /readyz stays 503 until the model answers a request.
                log.warning("worker %d: warm-up inference failed: %s", os.getpid(), exc)


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
        _current.strategy.on_exit()


def master_exit() -> None:
    """The server's shutdown hook calls this in the master."""
    if _current is not None:
        _current.strategy.on_exit()
