"""What a served model is: its file, its digest, its shapes and its reference set.

A spec is a small JSON file next to the reference set, so that a web worker knows the
input shape (to validate requests) before, or without, loading the ML runtime.

``ensure_spec`` runs in the launcher (``forkwise cell``/``model``/``matrix``); it builds
models and computes reference sets in a fresh interpreter, on CPU, with the Keras backend
asked for (``forkwise.gpu.clean_cpu_env``): one reference set per (model digest, backend),
so a GPU host without TensorFlow computes its own with JAX or torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forkwise import gpu
from forkwise.errors import ModelError

# Named models forkwise builds itself (model/build.py), seeded, nothing downloaded. MLPs: layer
# widths, input first.
MLP_MODELS: dict[str, tuple[int, ...]] = {
    "default": (256, 1024, 1024, 1),
    "large": (1024, 4096, 4096, 1),
    "tiny": (8, 10, 1),
}
# Networks of the shapes teams serve, whose call cost, batch economics and memory differ from an
# MLP's: the instance's input shape (model/build.py builds them). `cnn`: MobileNetV2 (alpha 0.35,
# 10 logits) on 48x48 RGB images; `text`: a 2-block transformer encoder over 64 pre-embedded
# tokens of 64 values (positions included), mean-pooled to 8 outputs. Sized for a 2-core CPU
# (TensorFlow 2.21, warm compiled call, median of 300): cnn 5.3 ms at batch 1, 15 ms at batch 32
# (190 -> 2,100 rows/s); text 1.4 ms and 9.7 ms (700 -> 3,300 rows/s). 48x48 keeps the
# db-contention scenario's 16 instances per request (110k values) under max_body_bytes.
NETWORK_MODELS: dict[str, tuple[int, ...]] = {
    "cnn": (48, 48, 3),
    "text": (64, 64),
}
BUILTIN_MODELS: tuple[str, ...] = (*MLP_MODELS, *NETWORK_MODELS)
# Small seeded models of other input ranks and output widths than the MLPs above: the
# instance's input shape and the output width. They stand for a user's own `.keras` file
# (tests serve them under every strategy); rank 3 is a small convolutional network.
SHAPED_MODELS: dict[str, tuple[tuple[int, ...], int]] = {
    "rank2": ((4, 8), 3),
    "conv": ((8, 8, 1), 2),
}
REFERENCE_ROWS = 64
SEED = 20261126
# Building and computing the reference import TensorFlow in a fresh process: 2 s and up.
BUILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_path: Path
    reference_path: Path
    sha256: str
    input_shape: tuple[int, ...]  # one instance, without the batch axis
    output_shape: tuple[int, ...]
    backend: str = gpu.DEFAULT_BACKEND  # the Keras backend that computed the reference set (on CPU)

    @classmethod
    def load(cls, spec_path: Path) -> ModelSpec:
        try:
            data = json.loads(Path(spec_path).read_text())
            return cls(
                name=data["name"],
                model_path=Path(data["model_path"]),
                reference_path=Path(data["reference_path"]),
                sha256=data["sha256"],
                input_shape=tuple(data["input_shape"]),
                output_shape=tuple(data["output_shape"]),
                backend=data.get("backend", gpu.DEFAULT_BACKEND),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read model spec {spec_path}: {exc}") from None

    def save(self, spec_path: Path) -> None:
        data = {
            "name": self.name,
            "model_path": str(self.model_path),
            "reference_path": str(self.reference_path),
            "sha256": self.sha256,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "backend": self.backend,
        }
        _atomic_write(spec_path, json.dumps(data, indent=2).encode())

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed inputs and the outputs a clean process computed for them."""
        with np.load(self.reference_path) as ref:
            return ref["inputs"], ref["outputs"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _run_clean(args: list[str], what: str, backend: str = gpu.DEFAULT_BACKEND) -> str:
    """Run a forkwise.model.build step in a fresh interpreter, on CPU, with the given Keras
    backend: nothing of this process leaks in."""
    cmd = [sys.executable, "-m", "forkwise.model.build", *args]
    env = {**os.environ, **gpu.clean_cpu_env(backend)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{what} took over {BUILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ModelError(f"{what} failed:\n{tail}")
    return proc.stdout


def build_shaped_model(home: Path, name: str, rebuild: bool = False) -> Path:
    """The `.keras` file of a SHAPED_MODELS model, built on first use; serve it as a user's own
    model (``ensure_spec(home, path)`` computes its reference set)."""
    if name not in SHAPED_MODELS:
        raise ModelError(f"{name!r}: not a shaped model ({', '.join(SHAPED_MODELS)})")
    model_path = Path(home) / "models" / f"shaped-{name}" / f"{name}.keras"
    if rebuild or not model_path.exists():
        _run_clean(["--write-shaped", name, str(model_path)], f"building the {name!r} shaped model")
    return model_path


def ensure_spec(home: Path, model: str | Path = "default", rebuild: bool = False,
                backend: str = gpu.DEFAULT_BACKEND) -> Path:
    """Return the spec.json for a built-in model name or a user's ``.keras`` path.

    Builds the built-in model on first use (with ``backend``, when it is not built yet: the
    ``.keras`` file serves every backend); computes the reference set of any model in a
    separate clean CPU process with ``backend``, once per (model digest, backend).
    """
    gpu.check_choice("backend", backend, gpu.BACKENDS)
    if not gpu.backend_installed(backend):
        raise ModelError(gpu.backend_missing_message(backend))
    if isinstance(model, str) and model in BUILTIN_MODELS:
        folder = Path(home) / "models" / model
        model_path = folder / "model.keras"
        if rebuild or not model_path.exists():
            _run_clean(["--write-builtin", model, str(model_path)], f"building the {model!r} model", backend)
        name = model
    else:
        model_path = Path(model).expanduser().resolve()
        if model_path.suffix != ".keras":
            raise ModelError(
                f"{model}: not a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .keras file"
            )
        if not model_path.is_file():
            raise ModelError(f"{model_path}: no such model file")
        name = model_path.stem
    sha = file_sha256(model_path)
    folder = Path(home) / "references" / f"{sha[:16]}-{backend}"
    spec_path = folder / "spec.json"
    if spec_path.exists() and not rebuild:
        spec = ModelSpec.load(spec_path)
        if spec.model_path == model_path and spec.sha256 == sha and spec.backend == backend:
            return spec_path
    ref_path = folder / "reference.npz"
    out = _run_clean(["--reference", str(model_path), str(ref_path)],
                     f"computing the reference of {model_path} with {backend}", backend)
    shapes = json.loads(out.strip().splitlines()[-1])
    ModelSpec(
        name=name,
        model_path=model_path,
        reference_path=ref_path,
        sha256=sha,
        input_shape=tuple(shapes["input_shape"]),
        output_shape=tuple(shapes["output_shape"]),
        backend=backend,
    ).save(spec_path)
    return spec_path
