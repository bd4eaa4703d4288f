"""The model: the default MLPs, the reference set, and the compiled inference call.

``spec`` is importable without TensorFlow (the web app validates input with it);
``runtime`` and ``build`` import the ML runtime and are only called where a strategy
decides the runtime may live.
"""

from forkwise.model.spec import ModelSpec, ensure_spec

__all__ = ["ModelSpec", "ensure_spec"]
