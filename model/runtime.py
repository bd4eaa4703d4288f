"""Load a ``.keras`` file and return one compiled inference call.

Importing this module does not import the ML runtime; ``load_predictor`` does. Which
process calls it, and when, is exactly what a strategy decides.

The Keras backend (KERAS_BACKEND), the visible devices and the GPU memory policy come from
the environment the launcher gave the process (``forkwise.gpu``, applied by ``deploy.launch``);
nothing here changes them, so the matrix observes what each runtime does with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from forkwise.errors import ModelError

_EXTRAS = {"jax": "forkwise[jax]", "torch": "forkwise[torch]", "tensorflow": "forkwise"}


def _import_backend(module: str):
    """Import a backend's own module, or ModelError saying which extra installs it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ModelError(
            f"the Keras backend {module!r} cannot be imported ({exc}): pip install '{_EXTRAS.get(module, module)}'"
        ) from None


def _import_keras():
    """Keras imports its backend (KERAS_BACKEND) on import: a missing one is a ModelError."""
    try:
        import keras
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        root = missing.split(".")[0]
        hint = f": pip install '{_EXTRAS[root]}'" if root in _EXTRAS else ""
        raise ModelError(f"cannot import keras with its configured backend ({exc}){hint}") from None
    return keras


class Predictor:
    """A compiled, thread-safe inference call: float32 array in, float32 array out."""

    def __init__(self, call: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...]):
        self._call = call
        self.input_shape = input_shape

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._call(np.ascontiguousarray(batch, dtype=np.float32))


def _input_shape(model) -> tuple[int, ...]:
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError):
        raise ModelError("the model has no defined input; save it after building it with keras.Input") from None
    if any(d is None for d in shape):
        raise ModelError(f"the model's input shape {shape} has unknown dimensions; forkwise needs fixed ones")
    return tuple(int(d) for d in shape)


def load_predictor(model_path: Path) -> Predictor:
    """Load the model (Keras safe_mode on) and compile one call for any batch size."""
    keras = _import_keras()

    try:
        model = keras.saving.load_model(str(model_path), compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load {model_path}: {exc}") from None
    shape = _input_shape(model)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf = _import_backend("tensorflow")

        # Never model.predict per request: it costs ~47 ms against ~0.6 ms for this call.
        compiled = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *shape), tf.float32)],
            reduce_retracing=True,
        )
        return Predictor(lambda x: compiled(x).numpy(), shape)
    if backend == "jax":
        jax = _import_backend("jax")

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        jitted = jax.jit(lambda a, b, x: model.stateless_call(a, b, x, training=False)[0])
        return Predictor(lambda x: np.asarray(jitted(tv, ntv, x)), shape)
    if backend == "torch":
        torch = _import_backend("torch")

        def call(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x), training=False).cpu().numpy()

        return Predictor(call, shape)
    raise ModelError(f"Keras backend {backend!r} is not supported; use tensorflow, jax or torch")
