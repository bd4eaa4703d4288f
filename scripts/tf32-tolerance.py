"""Estimate how far TF32 matmuls (JAX's default for float32 on recent NVIDIA GPUs) move the
default model's outputs from its CPU reference set, without a GPU: operands are rounded to
TF32's 10-bit mantissa, products accumulate in float32. Prints the error and, for a few
(rtol, atol) pairs, the worst ratio of error to bound (below 1: every row passes).

    FORKWISE_HOME=... python scripts/tf32-tolerance.py [default|large|tiny]
"""

import sys

import keras
import numpy as np

from forkwise.config import default_home
from forkwise.model.spec import ModelSpec, ensure_spec


def tf32(a: np.ndarray) -> np.ndarray:
    bits = np.asarray(a, np.float32).copy().view(np.uint32)
    bits += np.uint32(0x1000)  # round to nearest on the 13 dropped mantissa bits
    bits &= np.uint32(0xFFFFE000)
    return bits.view(np.float32)


def main() -> None:
    spec = ModelSpec.load(ensure_spec(default_home(), sys.argv[1] if len(sys.argv) > 1 else "default"))
    x, ref = spec.reference()
    model = keras.saving.load_model(str(spec.model_path), compile=False)
    h = x
    dense = [layer.get_weights() for layer in model.layers if layer.get_weights()]
    for i, (w, b) in enumerate(dense):
        h = tf32(h) @ tf32(w) + b
        if i < len(dense) - 1:
            h = np.maximum(h, 0)
    d = np.abs(h - ref)
    print(f"outputs {float(np.abs(ref).min()):.3g} to {float(np.abs(ref).max()):.3g}; "
          f"largest error {float(d.max()):.3g}")
    for rtol, atol in [(1e-3, 1e-4), (1e-3, 1e-3), (1e-2, 2e-3)]:
        print(f"rtol {rtol:g} atol {atol:g}: worst error/bound {float((d / (atol + rtol * np.abs(ref))).max()):.2f}")


if __name__ == "__main__":
    main()
