"""control: no model at all. Same endpoint, validation and database write.

Its throughput is the ceiling of server plus database that any model strategy can
approach on this machine; every other cell is reported as a ratio to it.
"""

import numpy as np

from forkwise.strategies.base import Strategy


class Control(Strategy):
    name = "control"
    report_rank = 80
    summary = "no model: the same request path returning a constant (the ceiling)"
    serves_model = False

    def constant_output(self) -> np.ndarray:
        return np.zeros(self.spec.output_shape, np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread."""
        return np.broadcast_to(self.constant_output(), (len(batch), *self.spec.output_shape))
