"""preload: the article's case 2. Import the runtime and load the model in the master.

Gunicorn --preload, uWSGI's default (the app is loaded once, then the master forks).
The model is also called once in the master, as a team warming its cache would. Workers
inherit a runtime initialised before fork; whether they can use it is for the run to see.
"""

import numpy as np

from forkwise.model.runtime import Predictor, load_predictor
from forkwise.strategies.base import ServerNeeds, Strategy


class Preload(Strategy):
    name = "preload"
    article_case = 2
    report_rank = 20
    summary = "import the runtime and load the model in the master, before fork"
    needs = ServerNeeds(preload_app=True)
    # The inherited model serves as it is: no extra call in the worker before traffic.
    warm_after_fork = False

    _predictor: Predictor | None = None

    def preload(self) -> None:
        """Runs in the master before fork: load the model and call it once."""
        self._predictor = load_predictor(self.spec.model_path, self.settings.intra_op_threads)
        self._predictor(np.zeros((1, *self.spec.input_shape), np.float32))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, with the model the master built."""
        assert self._predictor is not None, "preload() loaded it in the master, before fork"
        return self._predictor(batch)
