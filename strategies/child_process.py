"""child-process: one model server per deployment, in its own fresh interpreter.

The master starts a supervisor (never forked from an initialised runtime: a fresh
interpreter), which runs the model server and restarts it if it dies. Workers never
import the runtime; they send float32 rows over a Unix socket in a private directory
and wait at most ``model_timeout_s``. While the model server is down they answer 503
with Retry-After, never hang. ``child-process-batched`` merges concurrent requests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from forkwise.config import AppSettings, allowed_batch_sizes
from forkwise.model.spec import ModelSpec
from forkwise.modelserver.client import ModelClient
from forkwise.procs import private_dir, stop_process
from forkwise.strategies.base import ServerNeeds, Strategy


class ChildProcess(Strategy):
    name = "child-process"
    report_rank = 60
    summary = "one model-server process per deployment; workers call it over a Unix socket"
    needs = ServerNeeds(preload_app=True)  # the master owns the model server
    has_model_server = True

    @classmethod
    def max_batch(cls, settings: AppSettings) -> int:
        return 1

    @classmethod
    def model_server_dir(cls, settings: AppSettings) -> Path:
        return settings.run_dir / "modelserver"

    def __init__(self, settings: AppSettings, spec: ModelSpec) -> None:
        """Runs in the master (this strategy preloads the app)."""
        super().__init__(settings, spec)
        self.socket_path = private_dir(self.model_server_dir(settings)) / "model.sock"
        self._supervisor: subprocess.Popen | None = None
        self.client = ModelClient(self.socket_path, settings.model_timeout_s)

    def preload(self) -> None:
        """Runs in the master before fork: start the supervisor, which starts the model server."""
        self._owner_pid = os.getpid()
        self._supervisor = subprocess.Popen(
            [
                self.settings.python, "-m", "forkwise.modelserver.supervisor",
                "--socket", str(self.socket_path),
                "--spec", str(self.settings.model_spec),
                "--max-batch", str(self.max_batch(self.settings)),
                "--max-wait-ms", str(self.settings.max_wait_ms),
                "--batch-sizes", self.settings.batch_sizes,
                # A request its worker gave up on (model_timeout_s) is failed, not computed late.
                "--deadline-s", str(self.settings.model_timeout_s),
                "--threads", str(self.settings.intra_op_threads),
            ]
        )

    def post_fork(self) -> None:
        """Runs in each worker: drop any connection state inherited from the master."""
        self.client = ModelClient(self.socket_path, self.settings.model_timeout_s)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread: one round trip to the model server."""
        out = self.client.predict(batch)
        return out.reshape(len(batch), *self.spec.output_shape)

    @classmethod
    def knobs(cls, settings: AppSettings) -> dict[str, object]:
        return {"max_batch": cls.max_batch(settings), "max_wait_ms": settings.max_wait_ms,
                "batch_sizes": ",".join(map(str, allowed_batch_sizes(settings.batch_sizes, cls.max_batch(settings))))
                or "any"}

    def on_exit(self) -> None:
        """Runs in the master at shutdown (stops the supervisor it started) and in each worker."""
        if self._supervisor is not None and os.getpid() == self._owner_pid:
            stop_process(self._supervisor, grace_s=5)
        self.client.close()


class ChildProcessBatched(ChildProcess):
    name = "child-process-batched"
    report_rank = 70
    summary = ("child-process with dynamic batching: queued requests share a call of up to max_batch rows, "
               "padded to fixed sizes; a lone request runs at once")

    @classmethod
    def max_batch(cls, settings: AppSettings) -> int:
        return settings.max_batch
