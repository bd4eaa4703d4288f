"""The built-in networks (``NETWORK_MODELS``: a MobileNetV2 on images, a transformer encoder on
pre-embedded tokens): they build seeded, their reference sets check, and every strategy serves them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forkwise import gpu
from forkwise.matrix.records.axes import axis
from forkwise.model.spec import BUILTIN_MODELS, NETWORK_MODELS, ModelSpec, ensure_spec
from forkwise.strategies import registry
from test_model_ranks import assert_serves_the_reference

RTOL, ATOL = gpu.tolerance("cpu")  # what verification allows a CPU answer against the reference

# Answers of the reference inputs in two calls of 32 rows, in a fresh interpreter (the reference
# set was computed one row at a time).
_BATCHED_ANSWERS = """
import sys
from pathlib import Path
import numpy as np
from forkwise.model.runtime import load_predictor
from forkwise.model.spec import ModelSpec
spec = ModelSpec.load(Path(sys.argv[1]))
inputs, _ = spec.reference()
predictor = load_predictor(spec.model_path)
np.save(sys.argv[2], np.concatenate([predictor(inputs[i : i + 32]) for i in range(0, len(inputs), 32)]))
"""


@pytest.fixture(scope="session", params=sorted(NETWORK_MODELS))
def network_spec_path(request, home) -> Path:
    return ensure_spec(home, request.param)


@pytest.fixture(scope="session")
def network_spec(network_spec_path) -> ModelSpec:
    return ModelSpec.load(network_spec_path)


def test_every_builtin_model_is_named_in_the_model_axis_help():
    assert all(name in axis("model").help for name in BUILTIN_MODELS)


def test_a_network_has_its_input_shape_and_answers_that_verification_tells_apart(network_spec):
    assert network_spec.input_shape == NETWORK_MODELS[network_spec.name]
    inputs, outputs = network_spec.reference()
    assert inputs.shape[1:] == network_spec.input_shape and outputs.shape[1:] == network_spec.output_shape
    # No row's answer is within tolerance of zeros or of another row's: a wrong answer is seen.
    assert not np.isclose(outputs, 0.0, rtol=RTOL, atol=ATOL).all(axis=1).any()
    assert len(np.unique(outputs.round(3), axis=0)) == len(outputs)


def test_a_network_answers_a_row_the_same_alone_and_in_a_batch_of_32(network_spec_path, network_spec, tmp_path):
    # Batch composition must not change a row's answer (BatchNormalization predicts with its moving
    # statistics), or a batched model server would fail verification.
    out = tmp_path / "batched.npy"
    env = {**os.environ, **gpu.clean_cpu_env(network_spec.backend)}
    proc = subprocess.run([sys.executable, "-c", _BATCHED_ANSWERS, str(network_spec_path), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), network_spec.reference()[1], rtol=RTOL, atol=ATOL)


def test_a_network_built_again_answers_the_same(network_spec, tmp_path):
    # Seeded: every host serves the same weights (the .keras zip's timestamps differ, not its weights).
    rebuilt = ModelSpec.load(ensure_spec(tmp_path, network_spec.name))
    np.testing.assert_array_equal(rebuilt.reference()[1], network_spec.reference()[1])


@pytest.mark.parametrize("name", registry.names())
def test_every_strategy_serves_the_networks(name, settings_for, network_spec_path, network_spec,
                                            no_leftover_children):
    assert_serves_the_reference(name, settings_for(name, network_spec_path, max_batch=8), network_spec)
