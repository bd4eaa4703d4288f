"""Load a ``.keras`` file and return one compiled inference call.

Importing this module does not import the ML runtime; ``load_predictor`` does. Which
process calls it, and when, is exactly what a strategy decides.

The Keras backend (KERAS_BACKEND), the visible devices and the GPU memory policy come from
the environment the launcher gave the process (``forkwise.gpu``, applied by ``deploy.launch``);
nothing here changes them, so the matrix observes what each runtime does with them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from forkwise.errors import ModelError

_EXTRAS = {"jax": "forkwise[jax]", "torch": "forkwise[torch]", "tensorflow": "forkwise"}


def _import_backend(module: str) -> ModuleType:
    """Import a backend's own module, or ModelError saying which extra installs it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ModelError(
            f"the Keras backend {module!r} cannot be imported ({exc}): pip install '{_EXTRAS.get(module, module)}'"
        ) from None


def _import_keras() -> ModuleType:
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
    """A compiled, thread-safe inference call: float32 array in, float32 array out.

    ``threads``: the runtime's intra-op threads in force in this process, as the runtime reports
    them (0: its own default)."""

    def __init__(self, call: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...], threads: int = 0):
        self._call = call
        self.input_shape = input_shape
        self.threads = threads

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._call(np.ascontiguousarray(batch, dtype=np.float32))

    def compile_for(self, sizes: tuple[int, ...]) -> dict[int, float]:
        """Compile and warm one call of every batch size (a JIT runtime, JAX's, compiles once per
        shape): {size: seconds of a warm call}, for a caller that then pads every batch to them."""
        warm = {}
        for size in sizes:
            batch = np.zeros((size, *self.input_shape), np.float32)
            self(batch)  # compiles this shape, where the runtime compiles per shape
            start = time.perf_counter()
            self(batch)
            warm[size] = time.perf_counter() - start
        return warm


def _input_shape(model: Any) -> tuple[int, ...]:
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError):
        raise ModelError("the model has no defined input; save it after building it with keras.Input") from None
    if any(d is None for d in shape):
        raise ModelError(f"the model's input shape {shape} has unknown dimensions; forkwise needs fixed ones")
    return tuple(int(d) for d in shape)


def _jax_threads(threads: int) -> int:
    """JAX: XLA's CPU flag, read when its CPU backend starts (after Keras imports JAX, before the
    first model). XLA takes one thread or its default only; returns what is in force."""
    if threads != 1:
        return 0
    from jax._src import xla_bridge

    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        raise ModelError("JAX's backend already started in this process; 1 intra-op thread must be set before it")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return 1


def _tensorflow_threads(tf: ModuleType, threads: int) -> int:
    """Intra- and inter-op threads, set before TensorFlow's runtime starts: ModelError once it has
    started with other numbers (a process that loaded a model already)."""
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                raise ModelError(f"TensorFlow already runs in this process with its own threads; "
                                 f"{threads} intra-op threads must be set before its first model") from None
    return tf.config.threading.get_intra_op_parallelism_threads()


def load_predictor(model_path: Path, threads: int = 0) -> Predictor:
    """Load the model (Keras safe_mode on) and compile one call for any batch size.

    ``threads``: the runtime's intra-op threads in this process (TensorFlow's threading config,
    torch.set_num_threads, XLA's CPU flags); 0 leaves the runtime's default."""
    keras = _import_keras()
    backend = keras.backend.backend()
    in_force = 0
    if backend == "jax":
        in_force = _jax_threads(threads)
    if backend == "tensorflow":
        in_force = _tensorflow_threads(_import_backend("tensorflow"), threads)
    if backend == "torch":
        torch = _import_backend("torch")
        if threads:
            torch.set_num_threads(threads)
        in_force = torch.get_num_threads()
    try:
        model = keras.saving.load_model(str(model_path), compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load {model_path}: {exc}") from None
    shape = _input_shape(model)
    if backend == "tensorflow":
        tf = _import_backend("tensorflow")

        # Never model.predict per request: it costs ~47 ms against ~0.6 ms for this call. The
        # concrete function (any batch size) skips tf.function's signature matching on every call.
        compiled = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *shape), tf.float32)],
        ).get_concrete_function()
        return Predictor(lambda x: compiled(tf.constant(x)).numpy(), shape, in_force)
    if backend == "jax":
        jax = _import_backend("jax")

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        jitted = jax.jit(lambda a, b, x: model.stateless_call(a, b, x, training=False)[0])
        return Predictor(lambda x: np.asarray(jitted(tv, ntv, x)), shape, in_force)
    if backend == "torch":
        torch = _import_backend("torch")

        def call(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x), training=False).cpu().numpy()

        return Predictor(call, shape, in_force)
    raise ModelError(f"Keras backend {backend!r} is not supported; use tensorflow, jax or torch")
