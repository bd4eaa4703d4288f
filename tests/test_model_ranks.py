"""Models of other input ranks and output widths than the built-in MLPs, under every strategy.

The shaped models (``SHAPED_MODELS``: a rank-2 input (4, 8) with 3 outputs, a small
convolutional network on (8, 8, 1) with 2 outputs) stand for a user's own model: each is built
seeded into a `.keras` file and served the way ``--model PATH.keras`` is. Their layers depend on
where each value sits, so an instance passed on in another layout gets another answer.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.model.spec import SHAPED_MODELS, ModelSpec, build_shaped_model, ensure_spec
from forkwise.modelserver import protocol, server
from forkwise.strategies import registry
from forkwise.testing import wait_for_answer
from forkwise.webapp import create_app
from forkwise.webapp.validation import BadRequest, instances_from
from host_pace import cell_bound_s

RTOL, ATOL = 1e-5, 1e-6  # the CPU tolerance of verification (matrix.cell.Verification)


@pytest.fixture(scope="session", params=sorted(SHAPED_MODELS))
def shaped_spec_path(request, home) -> Path:
    return ensure_spec(home, build_shaped_model(home, request.param))


@pytest.fixture(scope="session")
def shaped_spec(shaped_spec_path) -> ModelSpec:
    return ModelSpec.load(shaped_spec_path)


# --- the shaped models are what they claim ------------------------------------------------------


def test_shaped_models_have_their_ranks_and_widths(shaped_spec):
    input_shape, width = SHAPED_MODELS[shaped_spec.name]
    assert shaped_spec.input_shape == input_shape and len(input_shape) >= 2
    assert shaped_spec.output_shape == (width,)
    inputs, outputs = shaped_spec.reference()
    assert inputs.shape[1:] == input_shape and outputs.shape[1:] == (width,)
    assert np.ptp(outputs, axis=0).min() > 0  # the answers depend on the input


# --- the wire: flat rows, the shape restored from the spec (no ML runtime needed) ---------------


def test_unflatten_restores_each_instance_and_refuses_another_width():
    instances = np.arange(2 * 4 * 8, dtype=np.float32).reshape(2, 4, 8)
    flat = np.ascontiguousarray(instances).reshape(2, -1)
    np.testing.assert_array_equal(protocol.unflatten(flat, (4, 8)), instances)
    with pytest.raises(protocol.ProtocolError, match=r"32 values \(instance shape \[4, 8\]\)"):
        protocol.unflatten(flat[:, :31], (4, 8))


class FakeModel:
    """Stands in for a predictor of input (4, 8) and 3 outputs; records the shape of every call."""

    def __init__(self):
        self.weights = np.random.default_rng(3).standard_normal((32, 3)).astype(np.float32)
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, instances: np.ndarray) -> np.ndarray:
        if instances.shape[1:] != (4, 8):
            raise ValueError(f"the model takes (None, 4, 8), got {instances.shape}")
        self.calls.append(instances.shape)
        return self.expected(instances)

    def expected(self, instances: np.ndarray) -> np.ndarray:
        return instances.reshape(len(instances), -1) @ self.weights


def test_a_batch_of_requests_gets_one_call_and_each_request_its_own_rows():
    model = FakeModel()
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    sizes = [1, 3, 2, 4]
    rng = np.random.default_rng(5)
    mine = [server.Job(rng.standard_normal((n, 4, 8)).astype(np.float32)) for n in sizes]
    for job in mine:
        jobs.put(job)
    jobs.put(server.STOP)
    # Every job is queued before the loop starts and the batch closes at exactly their rows: one call.
    loop = threading.Thread(target=server.inference_loop, args=(model, jobs, sum(sizes), 60.0))
    loop.start()
    loop.join()
    assert model.calls == [(sum(sizes), 4, 8)]
    for job in mine:
        assert job.done.is_set() and job.failure is None
        np.testing.assert_allclose(job.answer, model.expected(job.instances), rtol=RTOL)


def test_a_failed_call_fails_every_request_of_its_batch():
    def short_answer(instances):
        return np.zeros((len(instances) - 1, 3), np.float32)

    batch = [server.Job(np.zeros((2, 4, 8), np.float32)), server.Job(np.zeros((1, 4, 8), np.float32))]
    server.answer_batch(short_answer, batch)
    assert all(job.done.is_set() and job.answer is None for job in batch)
    assert all("answered 2 rows for 3 instances" in job.failure for job in batch)


def test_the_model_server_connection_restores_the_input_shape():
    model = FakeModel()
    batcher = server.Batcher(model, 32, 0.001)
    loop = threading.Thread(target=batcher.run)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    handler = threading.Thread(target=server.handle, args=(theirs, batcher, (4, 8)))
    loop.start()
    handler.start()
    try:
        instances = np.random.default_rng(6).standard_normal((3, 4, 8)).astype(np.float32)
        protocol.send_array(ours, protocol.REQUEST, instances)
        kind, answer = protocol.recv_frame(ours)
        assert kind == protocol.ANSWER
        np.testing.assert_allclose(answer, model.expected(instances), rtol=RTOL)
        protocol.send_array(ours, protocol.REQUEST, np.zeros((1, 31), np.float32))
        kind, message = protocol.recv_frame(ours)
        assert kind == protocol.FAILURE and "instance shape [4, 8]" in message
    finally:
        ours.close()  # the handler sees the peer go and returns
        handler.join()
        batcher.jobs.put(server.STOP)
        loop.join()


# --- validation: a wrong shape is a clear 422 -----------------------------------------------------


@pytest.mark.parametrize("input_shape", [shape for shape, _ in SHAPED_MODELS.values()])
def test_validation_takes_instances_in_the_models_shape(input_shape):
    good = np.random.default_rng(7).standard_normal((2, *input_shape)).astype(np.float32)
    np.testing.assert_array_equal(instances_from({"instances": good.tolist()}, input_shape, 4), good)
    # Flat rows, an item short at the top, a value short in every innermost row.
    for bad in (good.reshape(2, -1), good[:, :-1], good[..., :-1]):
        with pytest.raises(BadRequest) as info:
            instances_from({"instances": bad.tolist()}, input_shape, 4)
        assert info.value.status == 422 and info.value.code == "wrong_shape"
        assert f"instance shape {list(input_shape)}" in info.value.message


def test_the_app_answers_a_wrong_shape_with_422_and_writes_nothing(settings_for, shaped_spec_path, shaped_spec):
    # control: the app's request path without a runtime; validation runs before any strategy does.
    client = create_app(settings_for("control", shaped_spec_path)).test_client()
    inputs, _ = shaped_spec.reference()
    flat = {"instances": inputs[:2].reshape(2, -1).tolist()}
    resp = client.post("/predict", data=json.dumps(flat), content_type="application/json")
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    error = resp.get_json()["error"]
    assert error["code"] == "wrong_shape" and f"instance shape {list(shaped_spec.input_shape)}" in error["message"]
    assert client.get("/stats").get_json()["rows"] == 0
    good = {"instances": inputs[:2].tolist()}
    resp = client.post("/predict", data=json.dumps(good), content_type="application/json")
    assert resp.status_code == 200
    assert np.asarray(resp.get_json()["predictions"]).shape == (2, *shaped_spec.output_shape)


# --- every strategy serves the shaped models --------------------------------------------------------


def answers(strategy, inputs: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Requests of the given sizes over consecutive reference rows, sent concurrently (a batched
    model server merges them); their answers in the order of the rows."""
    starts = np.cumsum([0, *sizes[:-1]])
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda s: strategy.predict(inputs[s[0] : s[0] + s[1]]), zip(starts, sizes, strict=True)))
    for part, size in zip(parts, sizes, strict=True):
        assert part.shape[0] == size
    return np.concatenate(parts)


@pytest.mark.parametrize("name", registry.names())
def test_every_strategy_serves_models_of_other_ranks(name, settings_for, shaped_spec_path, shaped_spec,
                                                     no_leftover_children):
    assert_serves_the_reference(name, settings_for(name, shaped_spec_path, max_batch=8), shaped_spec)


def assert_serves_the_reference(name: str, settings, spec: ModelSpec) -> None:
    """Strategy `name` answers requests of several sizes, sent concurrently, with the reference
    outputs (or the constant of a strategy that serves no model)."""
    strategy = registry.get(name)(settings, spec)
    inputs, outputs = spec.reference()
    try:
        if strategy.needs.preload_app:
            strategy.preload()
        strategy.post_fork()
        first = wait_for_answer(strategy, inputs[:1])  # a model server starts in a fresh interpreter
        assert first.shape == (1, *spec.output_shape)
        sizes = [1, 3, 2, 5, 1, 4]
        got = answers(strategy, inputs, sizes)
    finally:
        strategy.on_exit()
    want = outputs[: sum(sizes)] if strategy.serves_model else np.zeros_like(outputs[: sum(sizes)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- end to end: a real cell on a user's rank-3 model ---------------------------------------------


@pytest.mark.integration
def test_a_cell_serves_a_conv_model_batched_and_answers_bad_shapes_with_4xx(home):
    model_path = build_shaped_model(home, "conv")
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--strategy", "child-process-batched",
           "--server", "gunicorn-sync", "--model", str(model_path), "--scenario", "bad-input"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cell_bound_s())
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    # OK: every verification answer matched the reference from at least 2 workers, every
    # acknowledged row is stored, and none of the bad-input campaign's payloads (flat rows of
    # this rank-3 model's 64 values among them) got a 5xx or no answer.
    assert record.verdict is Verdict.OK, record.evidence
    assert record.model == "conv" and record.rows_found == record.rows_expected > 0
