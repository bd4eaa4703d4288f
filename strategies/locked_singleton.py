"""locked-singleton: the article's case 3 done properly.

The model loads on first use, once per worker, behind a thread lock (double-checked,
so the fast path is one attribute read) and a cross-process file lock that lets one
worker at a time initialise the runtime.
"""

import threading

import numpy as np
from filelock import FileLock

from forkwise.config import AppSettings
from forkwise.model.runtime import Predictor, load_predictor
from forkwise.model.spec import ModelSpec
from forkwise.strategies.base import Strategy


class LockedSingleton(Strategy):
    name = "locked-singleton"
    article_case = 3
    report_rank = 50
    summary = "load on first use behind a thread lock and a cross-process file lock (article case 3, fixed)"
    warm_after_fork = False  # loads on first use, by design

    _predictor: Predictor | None = None

    def __init__(self, settings: AppSettings, spec: ModelSpec) -> None:
        """Runs in the process that builds the app (each worker: this strategy never preloads)."""
        super().__init__(settings, spec)
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(settings.run_dir / "model-init.lock"))

    def model(self) -> Predictor:
        """Runs in a worker, on the request's thread: the singleton, loaded at most once."""
        predictor = self._predictor
        if predictor is not None:
            return predictor
        with self._lock:
            if self._predictor is None:
                with self._file_lock:
                    self._predictor = load_predictor(self.spec.model_path, self.settings.intra_op_threads)
            return self._predictor

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread."""
        return self.model()(batch)
