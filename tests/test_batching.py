"""The model server's batching (forkwise.modelserver.server): fixed batch sizes, the adaptive window,
the deadline. Fake models stand in for the runtime, except where a real compiled call is the point."""

from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pytest

from forkwise.config import allowed_batch_sizes
from forkwise.errors import ModelUnavailable
from forkwise.model.runtime import load_predictor
from forkwise.modelserver import protocol, server
from forkwise.modelserver.client import ModelClient
from host_pace import command_bound_s

SIZES = (1, 2, 4, 8, 16, 32)
WIDTH = 4


class RowModel:
    """Each output row depends on its input row only (like a model in inference): x @ w + 1, so a
    zero (padding) row answers 1, never 0. Records the batch size of every call, and can hold a
    call until released."""

    def __init__(self):
        self.weights = np.random.default_rng(11).standard_normal((WIDTH, 2)).astype(np.float32)
        self.calls: list[int] = []
        self.called_at: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.called_at.append(time.monotonic())
        self.entered.set()
        assert self.gate.wait(30), "the test never released the model"
        return self.expected(x)

    def expected(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1) @ self.weights + 1.0


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WIDTH)).astype(np.float32)


def submit_in_thread(batcher: server.Batcher, job: server.Job) -> threading.Thread:
    """submit() returns once the job is answered or queued; the job's `done` says when it is answered."""
    t = threading.Thread(target=batcher.submit, args=(job,), daemon=True)
    t.start()
    return t


@pytest.fixture
def stats() -> server.Stats:
    return server.Stats()


@pytest.fixture
def running():
    """Start a Batcher's inference thread; always stopped."""
    started = []

    def start(batcher: server.Batcher) -> server.Batcher:
        thread = threading.Thread(target=batcher.run, daemon=True)
        thread.start()
        started.append((batcher, thread))
        return batcher

    yield start
    for batcher, thread in started:
        batcher.jobs.put(server.STOP)
        thread.join(10)


# --- fixed batch sizes ---------------------------------------------------------------------------


def test_the_allowed_sizes_are_the_powers_of_two_up_to_max_batch():
    assert allowed_batch_sizes("pow2", 32) == SIZES
    assert allowed_batch_sizes("pow2", 24) == (1, 2, 4, 8, 16, 24)  # the last is max_batch itself
    assert allowed_batch_sizes("pow2", 1) == (1,)
    assert allowed_batch_sizes("any", 32) == ()
    assert allowed_batch_sizes("1,8,32", 32) == (1, 8, 32)


@pytest.mark.parametrize("n, plan", [
    (1, [(1, 1)]), (3, [(3, 4)]), (8, [(8, 8)]), (17, [(17, 32)]), (32, [(32, 32)]),
    (33, [(32, 32), (1, 1)]), (75, [(32, 32), (32, 32), (11, 16)]),
])
def test_each_call_is_padded_up_to_the_smallest_size_that_holds_it(n, plan):
    assert server.pad_plan(n, SIZES) == plan
    assert server.pad_plan(n, ()) == [(n, n)]  # "any": one call as it comes


@pytest.mark.parametrize("n", [1, 3, 5, 17, 40])
def test_padded_answers_equal_unpadded_and_padding_rows_are_dropped(n, stats):
    model, x = RowModel(), rows(n, seed=n)
    out = server.call_padded(model, x, SIZES, stats=stats)
    assert all(size in SIZES for size in model.calls)
    # No answer of a padding row (1.0s) is in it.
    np.testing.assert_allclose(out, model.expected(x), rtol=1e-5, atol=1e-6)
    assert stats.padded_rows == sum(model.calls) - n


def test_a_real_compiled_call_answers_the_same_padded(tiny_spec):
    predictor = load_predictor(tiny_spec.model_path)
    inputs, outputs = tiny_spec.reference()
    for n in (1, 3, 7, 13):
        padded = server.call_padded(predictor, inputs[:n], (1, 2, 4, 8), stats=server.Stats())
        np.testing.assert_allclose(padded, predictor(inputs[:n]).reshape(n, -1), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(padded, outputs[:n].reshape(n, -1), rtol=1e-5, atol=1e-6)


def test_compile_for_warms_every_size(tiny_spec):
    predictor = load_predictor(tiny_spec.model_path)
    warm = predictor.compile_for((1, 4, 16))
    assert sorted(warm) == [1, 4, 16] and all(t > 0 for t in warm.values())


# --- the adaptive window -------------------------------------------------------------------------


def test_a_lone_request_runs_at_once_on_its_own_thread(stats):
    model = RowModel()
    # A window of a minute: a request held for company would not be answered within the test.
    batcher = server.Batcher(model, 32, 60.0, SIZES, stats=stats)  # no inference thread: none is needed
    job = server.Job(rows(1))
    submit_in_thread(batcher, job)
    assert job.done.wait(30)
    assert job.failure is None and stats.direct == 1 and model.calls == [1]
    np.testing.assert_array_equal(job.answer, model.expected(job.instances))


def test_a_burst_that_arrives_during_a_call_shares_the_next_call(running, stats):
    model = RowModel()
    batcher = running(server.Batcher(model, 32, 0.05, SIZES, stats=stats))
    model.gate.clear()
    first = server.Job(rows(1, seed=1))
    threads = [submit_in_thread(batcher, first)]
    assert model.entered.wait(10)  # the first runs at once and holds the model
    burst = [server.Job(rows(1, seed=10 + i)) for i in range(5)]
    threads += [submit_in_thread(batcher, job) for job in burst]
    deadline = time.monotonic() + command_bound_s()
    while batcher._waiting < len(burst) and time.monotonic() < deadline:
        time.sleep(0.01)
    model.gate.set()
    for t in threads:
        t.join(30)
    assert all(job.done.wait(30) for job in [first, *burst])
    assert model.calls == [1, 8]  # the burst of 5 in one call, padded to 8
    assert stats.direct == 1 and stats.batches == 2 and stats.padded_rows == 3
    # A call of 1 row and one of 5 (the 4-7 bucket); all six requests' queue waits counted.
    assert stats.batch_sizes == [1, 0, 1] and stats.largest_batch == 5 and stats.waited_requests == 6
    for job in [first, *burst]:  # a matmul of 8 rows and of 1 may differ in the last bit
        np.testing.assert_allclose(job.answer, model.expected(job.instances), rtol=1e-5, atol=1e-6)


def test_a_queued_request_waits_for_company_only_while_requests_come_faster_than_calls(running):
    max_wait = 0.3
    busy, idle = server.Pace({1: 10.0}), server.Pace({1: 10.0})  # a call is taken to last 10 s
    busy.gap_s, idle.gap_s = 0.001, math.inf  # requests every ms; none seen lately
    for pace, waits in ((busy, True), (idle, False)):
        model = RowModel()
        batcher = running(server.Batcher(model, 32, max_wait, SIZES, pace=pace, stats=server.Stats()))
        job = server.Job(rows(1))
        batcher._waiting += 1  # as submit does when the model is taken: this one goes through the queue
        batcher.jobs.put(job)
        assert job.done.wait(30)
        waited = model.called_at[0] - job.arrived_at
        if waits:
            # Held for company, but never past max_wait after it could run (a loose bound above: a slow host).
            assert max_wait <= waited < max_wait + 5.0
        else:
            assert waited < max_wait  # nothing suggests company is coming: run now


def test_a_request_that_waited_past_the_deadline_is_failed_not_computed(running, stats):
    model = RowModel()
    batcher = running(server.Batcher(model, 32, 0.001, SIZES, deadline_s=0.05, stats=stats))
    with batcher._model:  # the model is taken (a long call): the request queues behind it
        job = server.Job(rows(1))
        t = submit_in_thread(batcher, job)
        time.sleep(0.2)
    t.join(30)
    assert job.done.wait(30) and job.answer is None and "past its 0.05 s deadline" in job.failure
    assert model.calls == [] and stats.expired == 1
    assert stats.batches == 0 and stats.waited_requests == 1 and stats.wait_percentile_s(50) >= 0.05


def test_the_worker_gets_model_unavailable_for_a_late_request(running):
    """Over the wire: the failure frame becomes ModelUnavailable in the worker, which answers 503."""
    model = RowModel()
    batcher = running(server.Batcher(model, 32, 0.001, SIZES, deadline_s=0.05, stats=server.Stats()))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    handler = threading.Thread(target=server.handle, args=(theirs, batcher, (WIDTH,)), daemon=True)
    handler.start()
    client = ModelClient("unused", timeout_s=command_bound_s())
    client._local.sock = ours  # this thread's connection: the socket pair
    taken = threading.Event()

    def take_the_model(seconds: float) -> None:  # a long call elsewhere: the request queues behind it
        with batcher._model:
            taken.set()
            time.sleep(seconds)

    holder = threading.Thread(target=take_the_model, args=(0.2,), daemon=True)
    holder.start()
    try:
        assert taken.wait(10)
        with pytest.raises(ModelUnavailable, match="deadline"):
            client.predict(rows(1))
        holder.join(10)
        protocol.send_array(ours, protocol.REQUEST, rows(2))  # the connection still serves
        kind, out = protocol.recv_frame(ours)
        assert kind == protocol.ANSWER and out.shape == (2, 2)
    finally:
        ours.close()
        handler.join(10)


def test_the_pace_follows_arrivals_and_calls():
    pace = server.Pace({1: 0.002, 8: 0.004})
    assert not pace.busy(1)  # no arrival seen: as if idle
    for i in range(50):
        pace.arrived(i * 0.001)  # one a millisecond
    assert pace.gap_s == pytest.approx(0.001)
    assert pace.busy(1) and pace.busy(6)  # 6 rows: the nearest measured size, 8
    pace.served(1, 0.0005)
    for i in range(50):
        pace.arrived(1.0 + i * 0.01)
    assert not pace.busy(1)  # requests every 10 ms, calls of ~1 ms: no reason to wait


def test_requests_that_find_the_model_busy_are_worth_waiting_for_and_a_lone_clients_are_not():
    together, lone = server.Pace({1: 0.001}), server.Pace({1: 0.001})
    for i in range(30):  # one request every 10 ms: slower than a 1-ms call either way
        together.arrived(i * 0.01, queued=True)  # clients that send together after each answer
        lone.arrived(i * 0.01, queued=False)  # one client: its request always finds the model idle
    assert together.busy(1) and not lone.busy(1)
