"""Build the built-in models and compute reference sets. Runs in a fresh process.

``python -m forkwise.model.build --write-builtin NAME PATH``,
``python -m forkwise.model.build --write-shaped NAME PATH`` and
``python -m forkwise.model.build --reference MODEL.keras OUT.npz`` (prints the shapes as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from forkwise.model.spec import BUILTIN_MODELS, REFERENCE_ROWS, SEED, SHAPED_MODELS


def write_builtin(name: str, path: Path) -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    widths = BUILTIN_MODELS[name]
    layers = [keras.Input(shape=(widths[0],), name="features")]
    for width in widths[1:-1]:
        layers.append(keras.layers.Dense(width, activation="relu"))
    layers.append(keras.layers.Dense(widths[-1]))
    _save(keras.Sequential(layers, name=f"forkwise_{name}"), path)


def write_shaped(name: str, path: Path) -> None:
    """A SHAPED_MODELS model. Every layer depends on where a value sits in the instance, so
    an instance passed on in another layout gets another answer."""
    import keras

    keras.utils.set_random_seed(SEED)
    input_shape, width = SHAPED_MODELS[name]
    layers = [keras.Input(shape=input_shape, name="features")]
    if len(input_shape) == 3:  # an image: height, width, channels
        layers.append(keras.layers.Conv2D(4, 3, activation="relu"))
    else:
        layers.append(keras.layers.Dense(16, activation="relu"))  # along the last axis
    layers += [keras.layers.Flatten(), keras.layers.Dense(width)]
    _save(keras.Sequential(layers, name=f"forkwise_shaped_{name}"), path)


def _save(model: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Save beside, then rename: a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".keras")
    os.close(fd)
    model.save(tmp)
    os.replace(tmp, path)


def write_reference(model_path: Path, out: Path) -> dict:
    from forkwise.model.runtime import load_predictor

    predictor = load_predictor(model_path)
    rng = np.random.default_rng(SEED)
    inputs = rng.standard_normal((REFERENCE_ROWS, *predictor.input_shape)).astype(np.float32)
    # One row at a time: the answer a request of one instance must match.
    outputs = np.concatenate([predictor(inputs[i : i + 1]) for i in range(len(inputs))])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, inputs=inputs, outputs=outputs.astype(np.float32))
    os.replace(tmp, out)
    return {"input_shape": list(predictor.input_shape), "output_shape": list(outputs.shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m forkwise.model.build")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-builtin", nargs=2, metavar=("NAME", "PATH"))
    group.add_argument("--write-shaped", nargs=2, metavar=("NAME", "PATH"))
    group.add_argument("--reference", nargs=2, metavar=("MODEL", "OUT"))
    args = parser.parse_args()
    if args.write_builtin:
        write_builtin(args.write_builtin[0], Path(args.write_builtin[1]))
    elif args.write_shaped:
        write_shaped(args.write_shaped[0], Path(args.write_shaped[1]))
    else:
        print(json.dumps(write_reference(Path(args.reference[0]), Path(args.reference[1]))))


if __name__ == "__main__":
    main()
