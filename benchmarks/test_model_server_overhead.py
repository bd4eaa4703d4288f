"""What the model server adds to one call of the model: its round trip against the same call in process.

Goal (recorded, never asserted; judged in RESULTS.md's goals table): at batch 1, a round trip to
the batched model server costs at most 100 us more than the compiled call made in the worker's
own process. Both are timed in alternating blocks of calls (the host's slow spells fall on both),
and the medians are compared.

Where the overhead goes, each measured against a no-op model server (another process running
the same Batcher, connection handler and wire protocol as the real one, with no model):
- ``ipc_us``: the round trip itself: the client's framing, the socket both ways, the server's
  connection thread, batcher and framing;
- ``waiting_us``: what waiting costs beyond that: the same no-op server busy for as long as the
  model's call takes before it answers. The worker's thread sleeps meanwhile, and the host wakes
  it when the answer comes (on a virtual machine an idle CPU has to be woken too).
The rest, ``overhead_us - ipc_us - waiting_us``, is the call itself running slower in the model
server than in the benchmark's process.

Run as a script, this file is that no-op server: ``python test_model_server_overhead.py SOCKET WORK_US``.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from forkwise.model.runtime import load_predictor
from forkwise.modelserver import server
from forkwise.modelserver.client import ModelClient
from forkwise.procs import stop_process
from forkwise.strategies import registry
from forkwise.testing import wait_for_answer

GOAL_US = 100
WIDTH = 256  # the default model's input: one row of 256 float32
BLOCKS, BLOCK_CALLS = 15, 100  # alternating blocks of calls, in process then through the server


def serve_no_model(socket_path: Path, work_s: float) -> None:
    """The no-op model server (run in its own process): answers each row with itself, after
    keeping its CPU busy for `work_s` as a model call would."""

    def model(rows: np.ndarray) -> np.ndarray:
        until = time.perf_counter() + work_s
        while time.perf_counter() < until:
            pass
        return rows.reshape(len(rows), -1)

    batcher = server.Batcher(model, 32, 0.001, (1, 2, 4, 8, 16, 32))
    threading.Thread(target=batcher.run, daemon=True).start()
    tmp = socket_path.with_name(socket_path.name + ".tmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    listener.listen(8)
    tmp.rename(socket_path)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=server.handle, args=(conn, batcher, (WIDTH,)), daemon=True).start()


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def alternating(first, second, row: np.ndarray) -> tuple[float, float]:
    """Median us of `first(row)` and of `second(row)`, timed in alternating blocks of calls."""
    a, b = [], []
    for _ in range(BLOCKS):
        for fn, out in ((first, a), (second, b)):
            for _ in range(BLOCK_CALLS):
                start = time.perf_counter()
                fn(row)
                out.append(time.perf_counter() - start)
    return median_us(a), median_us(b)


def no_model_round_trip_us(tmp: Path, row: np.ndarray, work_s: float) -> float:
    """Median round trip to a no-op model server that works `work_s` per call."""
    path = tmp / f"nomodel-{int(work_s * 1e6)}.sock"
    proc = subprocess.Popen([sys.executable, __file__, str(path), str(work_s * 1e6)])
    client = ModelClient(path, timeout_s=10)
    try:
        wait_for_answer(client, row)
        for _ in range(BLOCK_CALLS):
            client.predict(row)
        samples = []
        for _ in range(BLOCKS * BLOCK_CALLS):
            start = time.perf_counter()
            client.predict(row)
            samples.append(time.perf_counter() - start)
        return median_us(samples)
    finally:
        client.close()
        stop_process(proc, grace_s=2)


@pytest.fixture(scope="module")
def row_256(default_spec) -> np.ndarray:
    row = np.ascontiguousarray(default_spec.reference()[0][:1], dtype=np.float32)
    assert row.shape == (1, WIDTH)
    return row


@pytest.fixture(scope="module")
def batched_server(tmp_path_factory, settings_in, default_spec_path, default_spec, row_256):
    """The batched model server as a deployment runs it (max_batch 32, fixed sizes), always stopped."""
    settings = settings_in(tmp_path_factory.mktemp("overhead"), "child-process-batched", default_spec_path,
                           preload_app=True, model_timeout_s=10)
    strategy = registry.get("child-process-batched")(settings, default_spec)
    strategy.preload()
    try:
        wait_for_answer(strategy, row_256)
        yield strategy
    finally:
        strategy.on_exit()


@pytest.mark.benchmark(group="model-server-overhead", max_time=1.0, min_rounds=50)
def test_model_server_overhead_1x256(benchmark, batched_server, row_256, default_spec, tmp_path):
    """Round trip to the batched model server minus the same compiled call in this process, batch 1."""
    predictor = load_predictor(default_spec.model_path)
    for _ in range(BLOCK_CALLS):  # both warm
        predictor(row_256)
        batched_server.predict(row_256)
    in_process_us, round_trip_us = alternating(predictor, batched_server.predict, row_256)
    out = benchmark(batched_server.predict, row_256)
    np.testing.assert_allclose(out, default_spec.reference()[1][:1], rtol=1e-5, atol=1e-6)
    overhead_us = round_trip_us - in_process_us
    ipc_us = no_model_round_trip_us(tmp_path, row_256, 0.0)
    waiting_us = no_model_round_trip_us(tmp_path, row_256, in_process_us / 1e6) - in_process_us - ipc_us
    benchmark.extra_info.update({
        "goal_us": GOAL_US,
        "in_process_us": round(in_process_us, 1),
        "round_trip_us": round(round_trip_us, 1),
        "overhead_us": round(overhead_us, 1),
        "goal_met": bool(overhead_us <= GOAL_US),
        "ipc_us": round(ipc_us, 1),
        "waiting_us": round(waiting_us, 1),
        "call_in_server_us": round(overhead_us - ipc_us - waiting_us, 1),
        "max_batch": 32,
        "note": "medians of alternating blocks; ipc_us: the round trip to a no-op model server; waiting_us: "
                "the same server busy as long as the model's call, minus that time and ipc_us",
    })


if __name__ == "__main__":
    serve_no_model(Path(sys.argv[1]), float(sys.argv[2]) / 1e6)
