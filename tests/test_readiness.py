"""Readiness converges without traffic: a worker whose warm-up ran before the model server was up
retries it in the background and becomes ready (/readyz 200) by itself; one whose model stops
answering turns not ready, and ready again the same way."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from forkwise.deploy import launch, make_deployment
from forkwise.errors import ModelUnavailable
from forkwise.matrix.run.http import request
from forkwise.modelserver.client import ModelClient
from forkwise.procs import free_port
from forkwise.strategies.child_process import ChildProcess
from forkwise.webapp.process import WARM_UP_RETRY_MAX_S, AppProcess
from host_pace import cell_bound_s


def first_answer_s(client: ModelClient, row: np.ndarray, patience_s: float) -> float:
    """Seconds until the model server answers `client` (it starts in a fresh interpreter)."""
    start = time.monotonic()
    while True:
        try:
            client.predict(row)
            return time.monotonic() - start
        except ModelUnavailable:
            if time.monotonic() - start > patience_s:
                raise
            time.sleep(0.05)


def test_a_worker_that_warmed_up_before_the_model_server_becomes_ready_by_itself(settings_for, tiny_spec_path,
                                                                                 tiny_spec, no_leftover_children):
    settings = settings_for("child-process", tiny_spec_path, preload_app=True)
    strategy = ChildProcess(settings, tiny_spec)  # the master built the app; no model server yet
    state = AppProcess(settings, tiny_spec, strategy, db=None)
    try:
        state.worker_started()  # the worker's warm-up: nothing listens on the socket yet
        assert not state.ready and "model server not reachable" in state.not_ready_because
        strategy.preload()  # now the master's supervisor starts the model server
        row = np.zeros((1, *tiny_spec.input_shape), np.float32)
        probe = ModelClient(strategy.socket_path, settings.model_timeout_s)
        boot_s = first_answer_s(probe, row, patience_s=300)
        start = time.monotonic()
        round_trip_s = first_answer_s(probe, row, patience_s=300)
        # No request goes through the worker (`state.predict`): only its background warm-up can make
        # it ready, at most one retry pause after the model server answers, plus a round trip.
        deadline = start + 2 * WARM_UP_RETRY_MAX_S + 10 * round_trip_s
        while not state.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.ready, f"not ready {time.monotonic() - start:.1f} s after the model server answered " \
                            f"(it took {boot_s:.1f} s to start): {state.not_ready_because}"
        probe.close()
    finally:
        state.stopping.set()
        strategy.on_exit()


@pytest.mark.integration
def test_every_gunicorn_sync_worker_becomes_ready_with_no_request(tiny_spec_path, tmp_path):
    """The issue's case: `child-process` under gunicorn-sync, probed only on /readyz."""
    deployment = make_deployment(strategy="child-process", server="gunicorn-sync", workers=2,
                                 spec_path=tiny_spec_path, run_dir=tmp_path / "run", port=free_port())
    started = launch(deployment)
    try:
        ready: set[int] = set()
        seen_at = None  # when the first worker said it is ready: the model server answers by then
        limit = time.monotonic() + cell_bound_s()  # a ceiling only; the test's own deadline follows from seen_at
        while len(ready) < deployment.workers and time.monotonic() < limit:
            reply = request(deployment.host, deployment.port, "GET", "/readyz", timeout_s=10)
            if reply.kind == "ok":
                ready.add(int(reply.body["pid"]))
                if seen_at is None:
                    seen_at = time.monotonic()
                    boot_s = seen_at - started.group.started_at
                    limit = seen_at + 2 * WARM_UP_RETRY_MAX_S + boot_s  # a second worker: one more retry
            time.sleep(0.02)
        log = started.group.log_path.read_text(errors="replace")
        assert "warm-up inference failed" in log  # the race of the issue happened: warm-up before the model server
        assert len(ready) == deployment.workers, f"ready: {sorted(ready)}; log:\n{log[-3000:]}"
        assert "the warm-up inference answered: ready" in log
    finally:
        started.group.stop(grace_s=10)


def test_a_worker_whose_model_stops_answering_is_not_ready_until_it_answers_again():
    """/readyz follows the model: a ModelUnavailable (the model server died) makes the worker not
    ready at once, and a background warm-up makes it ready again once the model answers, with no
    request needed (an orchestrator sends none to a worker that is not ready)."""
    up = threading.Event()
    up.set()

    class ModelServer:
        def predict(self, batch):
            if not up.is_set():
                raise ModelUnavailable("model server not reachable")
            return np.zeros((len(batch), 1), np.float32)

    app = AppProcess(SimpleNamespace(), SimpleNamespace(input_shape=(3,)), ModelServer(), SimpleNamespace())
    try:
        app.predict(np.ones((1, 3), np.float32))
        assert app.ready
        up.clear()  # the model server dies
        with pytest.raises(ModelUnavailable):
            app.predict(np.ones((1, 3), np.float32))
        assert not app.ready and "did not answer" in app.not_ready_because
        time.sleep(0.3)
        assert not app.ready  # the background warm-up keeps failing meanwhile
        up.set()  # back: ready again within the warm-up's longest pause, without a request
        deadline = time.monotonic() + 5
        while not app.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.ready
    finally:
        app.stopping.set()
