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

from forkwise.errors import ModelError
from forkwise.model.spec import MLP_MODELS, NETWORK_MODELS, REFERENCE_ROWS, SEED, SHAPED_MODELS

# The text encoder: ENCODER_BLOCKS blocks of ENCODER_HEADS-head self-attention and a feed-forward
# ENCODER_FF_WIDTH wide, each with a residual and LayerNormalization (post-norm, as BERT).
ENCODER_BLOCKS, ENCODER_HEADS, ENCODER_FF_WIDTH, ENCODER_OUTPUTS = 2, 4, 256, 8
CNN_ALPHA, CNN_CLASSES = 0.35, 10
CALIBRATION_ROWS = 256


def write_builtin(name: str, path: Path) -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    if name in MLP_MODELS:
        model = _mlp(keras, name, MLP_MODELS[name])
    elif name == "cnn":
        model = _cnn(keras, NETWORK_MODELS[name])
    elif name == "text":
        model = _encoder(keras, NETWORK_MODELS[name])
    else:
        raise ModelError(f"{name!r}: not a built-in model")
    _save(model, path)


def _mlp(keras: Any, name: str, widths: tuple[int, ...]) -> Any:
    layers = [keras.Input(shape=(widths[0],), name="features")]
    for width in widths[1:-1]:
        layers.append(keras.layers.Dense(width, activation="relu"))
    layers.append(keras.layers.Dense(widths[-1]))
    return keras.Sequential(layers, name=f"forkwise_{name}")


def _cnn(keras: Any, input_shape: tuple[int, ...]) -> Any:
    """MobileNetV2, random weights (weights=None: nothing downloaded); its BatchNormalization layers
    predict with their moving statistics (the runtime calls with training=False), so a row's
    answer does not depend on the other rows of its batch. Logits, not softmax: answers spread."""
    model = keras.applications.MobileNetV2(input_shape=input_shape, alpha=CNN_ALPHA, weights=None,
                                           classes=CNN_CLASSES, classifier_activation=None, name="forkwise_cnn")
    _calibrate_batch_norm(keras, model, input_shape)
    return model


def _calibrate_batch_norm(keras: Any, model: Any, input_shape: tuple[int, ...]) -> None:
    """Set every BatchNormalization's moving statistics to those of seeded images, as training
    would. With the initial ones (mean 0, variance 1) a random MobileNetV2's activations shrink
    block after block to logits of ~1e-10: any answer near zero would pass verification."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0  # the moving statistics become this batch's
    images = np.random.default_rng(SEED + 1).standard_normal((CALIBRATION_ROWS, *input_shape)).astype(np.float32)
    model(images, training=True)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def _encoder(keras: Any, input_shape: tuple[int, ...]) -> Any:
    width = input_shape[-1]  # each token's values
    features = keras.Input(shape=input_shape, name="features")
    x = features
    for _ in range(ENCODER_BLOCKS):
        attended = keras.layers.MultiHeadAttention(ENCODER_HEADS, key_dim=width // ENCODER_HEADS)(x, x)
        x = keras.layers.LayerNormalization()(keras.layers.Add()([x, attended]))
        hidden = keras.layers.Dense(ENCODER_FF_WIDTH, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(keras.layers.Add()([x, keras.layers.Dense(width)(hidden)]))
    pooled = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(features, keras.layers.Dense(ENCODER_OUTPUTS)(pooled), name="forkwise_text")


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
