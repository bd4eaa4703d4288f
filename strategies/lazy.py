"""lazy: every worker imports the runtime and loads the model after fork.

Gunicorn without --preload; uWSGI with lazy-apps. Correct under every server, at the
price of one full copy of the runtime and the model per worker.
"""

import numpy as np

from forkwise.model.runtime import Predictor, load_predictor
from forkwise.strategies.base import ServerNeeds, Strategy


class Lazy(Strategy):
    name = "lazy"
    compared_in_case = 3
    report_rank = 40
    summary = "load the model in each worker after fork (no preload; uWSGI lazy-apps)"
    needs = ServerNeeds(preload_app=False)

    _predictor: Predictor | None = None

    def post_fork(self) -> None:
        """Runs in each worker after fork: import the runtime and load the model here."""
        self._predictor = load_predictor(self.spec.model_path, self.settings.intra_op_threads)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread."""
        assert self._predictor is not None, "post_fork() loaded it, before any request"
        return self._predictor(batch)
