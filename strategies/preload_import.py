"""preload-import: import the runtime in the master, load the model after fork.

Shares the imported modules' pages between workers (copy-on-write) while every
runtime object that holds threads or device state is created after fork.
"""

from typing import ClassVar

import numpy as np

from forkwise.model.runtime import Predictor, load_predictor
from forkwise.strategies.base import ServerNeeds, Strategy


class PreloadImport(Strategy):
    name = "preload-import"
    compared_in_case: ClassVar[int | None] = 2
    report_rank = 30
    summary = "import the runtime in the master, load the model in each worker after fork"
    needs = ServerNeeds(preload_app=True)

    _predictor: Predictor | None = None

    def preload(self) -> None:
        """Runs in the master before fork: import only, touch no runtime state."""
        import keras  # noqa: F401  (imports the backend too)

    def post_fork(self) -> None:
        """Runs in each worker after fork: load the model here."""
        self._predictor = load_predictor(self.spec.model_path, self.settings.intra_op_threads)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread."""
        assert self._predictor is not None, "post_fork() loaded it, before any request"
        return self._predictor(batch)


class PreloadImportFrozen(PreloadImport):
    name = "preload-import-frozen"
    compared_in_case = None  # the variant is not the article's
    report_rank = 90  # after the ceiling, where reports have always listed this variant
    summary = "preload-import, plus gc.freeze() in the master before fork (copy-on-write friendly)"
    freeze_gc_before_fork = True
