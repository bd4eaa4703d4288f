"""Requests in flight per worker (the in_flight axis) and the gevent server settings: the adapters
translate the axis, a setting that serves one request at a time refuses it, the model server's
client yields under gevent, and a gevent deployment of a model-server strategy batches one worker's
requests."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from forkwise.config import AppSettings
from forkwise.deploy import launch, make_deployment
from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.run.http import post_json
from forkwise.matrix.run.plan import CellPlan
from forkwise.matrix.run.profile import load_profile
from forkwise.model.spec import ModelSpec
from forkwise.modelserver import protocol
from forkwise.procs import free_port
from forkwise.servers import get as get_server
from forkwise.servers.base import DEFAULT_GREENLETS, DEFAULT_THREADS, Deployment
from forkwise.strategies import registry
from host_pace import cell_bound_s

LAZY = registry.get("lazy").needs


def _deployment(tmp_path: Path, server: str, in_flight: int = 0) -> Deployment:
    settings = AppSettings(strategy="lazy", model_spec=tmp_path / "spec.json", database_url="sqlite://",
                           run_dir=tmp_path)
    return Deployment(settings=settings, server=server, threads=get_server(server).in_flight(in_flight))


def _gunicorn_config(tmp_path: Path, server: str, in_flight: int = 0) -> str:
    plan = get_server(server).plan(_deployment(tmp_path, server, in_flight), LAZY)
    return next(iter(plan.files.values()))


def _uwsgi_option(tmp_path: Path, server: str, option: str, in_flight: int = 0) -> str | None:
    argv = get_server(server).plan(_deployment(tmp_path, server, in_flight), LAZY).argv
    return argv[argv.index(option) + 1] if option in argv else None


def test_gunicorn_settings_take_in_flight_as_threads_or_worker_connections(tmp_path):
    assert f"threads = {DEFAULT_THREADS}\n" in _gunicorn_config(tmp_path, "gunicorn-gthread")
    assert "threads = 16\n" in _gunicorn_config(tmp_path, "gunicorn-gthread", 16)
    gevent = _gunicorn_config(tmp_path, "gunicorn-gevent")
    assert "worker_class = 'gevent'" in gevent and f"worker_connections = {DEFAULT_GREENLETS} " in gevent
    assert "worker_connections = 8 " in _gunicorn_config(tmp_path, "gunicorn-gevent", 8)
    assert "threads = 1\n" in _gunicorn_config(tmp_path, "gunicorn-sync")


def test_uwsgi_settings_take_in_flight_as_threads_or_async_cores(tmp_path):
    assert _uwsgi_option(tmp_path, "uwsgi-threads", "--threads") == str(DEFAULT_THREADS)
    assert _uwsgi_option(tmp_path, "uwsgi-threads", "--threads", 16) == "16"
    assert _uwsgi_option(tmp_path, "uwsgi-gevent", "--gevent", 8) == "8"
    argv = get_server("uwsgi-gevent").plan(_deployment(tmp_path, "uwsgi-gevent"), LAZY).argv
    assert "--gevent-early-monkey-patch" in argv and "--threads" not in argv
    assert _uwsgi_option(tmp_path, "uwsgi", "--threads") is None
    assert _uwsgi_option(tmp_path, "uwsgi", "--gevent") is None


@pytest.mark.parametrize("server", ["gunicorn-sync", "uwsgi"])
def test_in_flight_on_a_setting_of_one_request_at_a_time_is_an_error(tmp_path, server):
    with pytest.raises(ConfigError, match=f"{server} serves one request at a time per worker"):
        make_deployment(strategy="lazy", server=server, workers=2, spec_path=tmp_path / "spec.json",
                        run_dir=tmp_path / "run", port=free_port(), in_flight=8)
    with pytest.raises(ConfigError, match="one request at a time"):
        CellPlan(cell=Cell(strategy="lazy", server=server, in_flight=8))
    profile = tmp_path / "p.toml"
    profile.write_text(f'[axes]\nstrategy = ["lazy"]\nserver = ["{server}"]\nin_flight = [8]\n')
    with pytest.raises(ConfigError, match="one request at a time"):
        load_profile(str(profile))


def test_in_flight_leaves_old_cell_ids_and_names_its_own():
    assert Cell(strategy="lazy", server="uwsgi").id == "lazy/uwsgi/w2/default/cpu/steady"
    assert Cell(strategy="lazy", server="uwsgi-threads", in_flight=16).id == (
        "lazy/uwsgi-threads/w2/default/cpu/inflight-16/steady")


# A model server that answers nothing until `expected` requests are waiting on it at once.
def _serve_once_all_arrived(listener: socket.socket, expected: int) -> None:
    waiting: list[tuple[socket.socket, np.ndarray]] = []
    while len(waiting) < expected:
        conn, _ = listener.accept()
        kind, rows = protocol.recv_frame(conn)
        assert kind == protocol.REQUEST and isinstance(rows, np.ndarray)
        waiting.append((conn, rows))
    for conn, rows in waiting:
        protocol.send_array(conn, protocol.ANSWER, rows * 2)
        conn.close()


_GREENLETS_CLIENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()  # as gunicorn's gevent worker does before it loads the app
    import sys
    import gevent
    import numpy as np
    from forkwise.modelserver.client import ModelClient
    client = ModelClient(sys.argv[1], timeout_s=float(sys.argv[3]))
    calls = [gevent.spawn(client.predict, np.full((1, 3), i, np.float32)) for i in range(int(sys.argv[2]))]
    gevent.joinall(calls)
    for call in calls:
        if call.exception is not None:
            raise call.exception
    print(sorted(int(call.value[0, 0]) for call in calls))
""")


def test_the_model_client_yields_under_gevent(tmp_path):
    """One monkey-patched process holds every one of its greenlets' requests at the model server
    at once: a blocking client would wait on the first answer, which never comes."""
    greenlets = 8
    path = str(tmp_path / "model.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(greenlets)
    server = threading.Thread(target=_serve_once_all_arrived, args=(listener, greenlets), daemon=True)
    server.start()
    try:
        proc = subprocess.run([sys.executable, "-c", _GREENLETS_CLIENT, path, str(greenlets), "20"],
                              capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str([2 * i for i in range(greenlets)])


@pytest.mark.integration
def test_one_gevent_worker_hands_the_model_server_batches(default_spec_path, tmp_path):
    """child-process-batched under gunicorn-gevent with one worker: the concurrent requests are all
    answered correctly, and the model server ran some of them together (under a worker that
    waited on each answer in turn, every call would be one request)."""
    clients = 32
    deployment = make_deployment(strategy="child-process-batched", server="gunicorn-gevent", workers=1,
                                 spec_path=default_spec_path, run_dir=tmp_path / "run", port=free_port(),
                                 in_flight=clients, overrides={"max_wait_ms": 20.0})
    inputs, outputs = ModelSpec.load(default_spec_path).reference()
    started = launch(deployment)
    try:
        def one(i: int) -> bool:
            row = i % len(inputs)
            reply = post_json(deployment.host, deployment.port, "/predict", {"instances": inputs[[row]].tolist()},
                              timeout_s=cell_bound_s())
            if reply.kind != "ok":
                return False
            got = np.asarray(reply.body["predictions"], np.float32).reshape(outputs[[row]].shape)
            return np.allclose(got, outputs[[row]], atol=1e-4)

        ready_by = time.monotonic() + cell_bound_s()
        while not one(0):  # 503 while the worker warms up and the model server loads
            assert time.monotonic() < ready_by, started.group.log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(3):
                assert all(pool.map(one, range(clients)))
    finally:
        started.group.stop(grace_s=10)
    log = started.group.log_path.read_text(errors="replace")
    stats = re.search(r"model server \d+: (\d+) requests, \d+ rows in (\d+) calls", log)
    assert stats, log[-3000:]
    requests, calls = int(stats[1]), int(stats[2])
    assert requests >= 1 + 3 * clients and calls < requests, stats[0]
