"""import-in-route: the article's case 1. Import and load inside the request handler.

No lock: concurrent first requests may each load the model. The article claims such
imports fail under concurrency; Python's import lock serialises them, and the matrix
shows what happens.
"""

import numpy as np

from forkwise.model.runtime import Predictor
from forkwise.strategies.base import Strategy


class ImportInRoute(Strategy):
    name = "import-in-route"
    article_case = 1
    report_rank = 10
    summary = "import the runtime and load the model inside the request handler (article case 1)"
    warm_after_fork = False  # nothing is loaded until a request arrives

    _predictor: Predictor | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread: imports and loads on first use, unguarded."""
        import tensorflow  # noqa: F401  (the article's import, in the route)

        from forkwise.model.runtime import load_predictor

        if self._predictor is None:
            self._predictor = load_predictor(self.spec.model_path, self.settings.intra_op_threads)
        return self._predictor(batch)
