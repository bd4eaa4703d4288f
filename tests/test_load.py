"""forkwise.matrix.run.load against a tiny in-process HTTP server on 127.0.0.1 (fast, no TF)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from forkwise.errors import ForkwiseError
from forkwise.matrix.run.load import LoadError, LoadResult, run_load

BODIES = [json.dumps({"id": i, "x": [i, i + 1]}).encode() for i in range(5)]
SLOW_ID = 3  # bodies with this id are answered after `sleep_s` when the server is told to


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like gunicorn/uWSGI with Content-Length
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed-ACK stalls

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.count += 1
            status = 500 if srv.fail_every and srv.count % srv.fail_every == 0 else 200
            srv.rows += status == 200  # like the app: the row is written before the answer is sent
        if srv.sleep_s and req["id"] == SLOW_ID:
            time.sleep(srv.sleep_s)
        out = json.dumps({"echo": req["id"], "y": sum(req["x"])}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if srv.close_mode == "announce":  # gunicorn sync: "Connection: close" on every answer
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(out)
        if srv.close_mode == "silent":  # uWSGI http-socket: HTTP/1.1, no header, then close
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """Yields (srv, url); srv.fail_every / srv.sleep_s / srv.close_mode change how it answers."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.handle_error = lambda request, address: None  # aborted timeouts reset connections: expected
    srv.lock, srv.count, srv.rows = threading.Lock(), 0, 0
    srv.fail_every, srv.sleep_s, srv.close_mode = 0, 0.0, ""
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}/predict"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def no_children_left():
    yield
    assert psutil.Process().children(recursive=True) == []


def _check_common(res: LoadResult, driver: str, concurrency: int) -> None:
    assert res.driver == driver and res.concurrency == concurrency
    assert res.ok > 0 and res.total_ok_including_warmup >= res.ok
    assert len(res.rps_samples) == 3 and all(isinstance(x, float) and x >= 0 for x in res.rps_samples)
    assert sum(res.rps_samples) > 0
    lat = res.latency_ms
    assert set(lat) == {"p50", "p90", "p99", "max", "mean"}
    assert all(isinstance(v, float) for v in lat.values())
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert res.duration_s > 0.9 and res.driver_cpu_s > 0


def _check_rows(srv, res: LoadResult) -> None:
    """Rows the server wrote lie between what was acknowledged and that plus the unacknowledged."""
    time.sleep(0.1)  # let the server reach requests the driver abandoned
    assert res.total_ok_including_warmup <= srv.rows <= res.total_ok_including_warmup + res.unacknowledged


def _check_samples(res: LoadResult) -> None:
    assert res.sampled_bodies and len(res.sampled_bodies) == len(res.sampled_requests)
    for body, idx in zip(res.sampled_bodies, res.sampled_requests, strict=True):
        req = json.loads(BODIES[idx])
        assert json.loads(body) == {"echo": req["id"], "y": sum(req["x"])}


def test_builtin_clean_run(server):
    srv, url = server
    res = run_load(url, BODIES, concurrency=4, warmup_s=0.3, duration_s=1.0, intervals=3,
                   timeout_s=2.0, driver="builtin", sample_every=10)
    _check_common(res, "builtin", 4)
    _check_samples(res)
    assert (res.http_4xx, res.http_5xx, res.timeout, res.connect) == (0, 0, 0, 0)
    assert res.total_ok_including_warmup == srv.count == srv.rows  # every request answered and counted
    assert res.unacknowledged == 0
    assert res.total_ok_including_warmup > res.ok  # warm-up answers are included
    assert abs(sum(res.rps_samples) / 3 - res.ok / res.duration_s) < 0.2 * res.ok / res.duration_s


@pytest.mark.parametrize("close_mode", ["announce", "silent"])
def test_builtin_reconnects_when_the_server_closes(server, close_mode):
    srv, url = server
    srv.close_mode = close_mode
    res = run_load(url, BODIES, concurrency=4, warmup_s=0.2, duration_s=0.6, intervals=3,
                   timeout_s=2.0, driver="builtin", sample_every=10)
    assert res.ok > 0 and (res.http_4xx, res.http_5xx, res.timeout, res.connect) == (0, 0, 0, 0)
    assert res.total_ok_including_warmup == srv.count and res.unacknowledged == 0
    _check_samples(res)


def test_builtin_counts_5xx_and_timeouts(server):
    srv, url = server
    srv.fail_every, srv.sleep_s = 7, 0.6
    res = run_load(url, BODIES, concurrency=4, warmup_s=0.3, duration_s=1.0, intervals=3,
                   timeout_s=0.25, driver="builtin", sample_every=1)
    _check_common(res, "builtin", 4)
    _check_samples(res)
    assert res.http_5xx > 0 and res.timeout > 0 and res.http_4xx == 0
    assert res.latency_ms["max"] < 250 + 50  # only answers within the timeout are 2xx latencies
    assert res.unacknowledged >= res.timeout  # timed-out requests are never acknowledged
    _check_rows(srv, res)


def test_builtin_refused_connections_count_as_connect():
    url = "http://127.0.0.1:9/predict"  # discard port: nothing listens on loopback here
    res = run_load(url, BODIES, concurrency=2, warmup_s=0.0, duration_s=0.3, intervals=3,
                   timeout_s=0.5, driver="builtin")
    assert res.ok == 0 and res.connect > 0 and res.rps_samples == (0.0, 0.0, 0.0)
    assert res.latency_ms == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}


@pytest.mark.parametrize("url", ["http://10.1.2.3:80/predict", "http://example.com/predict",
                                 "https://127.0.0.1:8443/predict", "http://127.0.0.2:80/predict"])
def test_non_loopback_url_is_refused(url):
    with pytest.raises(LoadError, match="loopback") as info:
        run_load(url, BODIES, 2, 0.1, 1.0, 3, 1.0, driver="builtin")
    assert isinstance(info.value, ForkwiseError)


def test_bad_arguments_raise_load_error():
    url = "http://127.0.0.1:9/predict"
    with pytest.raises(LoadError, match="intervals"):
        run_load(url, BODIES, 2, 0.1, 1.0, 0, 1.0, driver="builtin")
    with pytest.raises(LoadError, match="unknown load driver"):
        run_load(url, BODIES, 2, 0.1, 1.0, 3, 1.0, driver="ab")
    with pytest.raises(LoadError, match="bodies"):
        run_load(url, [], 2, 0.1, 1.0, 3, 1.0, driver="builtin")


def test_deadline_stops_the_child(server):
    _, url = server
    t0 = time.monotonic()
    with pytest.raises(LoadError, match="deadline"):
        run_load(url, BODIES, 2, 0.0, 5.0, 3, 1.0, driver="builtin", deadline_s=0.5)
    assert time.monotonic() - t0 < 3.0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_counts_ok_5xx_and_timeouts(server):
    srv, url = server
    srv.fail_every, srv.sleep_s = 7, 1.2  # wrk's --timeout is whole seconds: 1 s
    res = run_load(url, BODIES, concurrency=4, warmup_s=0.3, duration_s=6.0, intervals=3,
                   timeout_s=1.0, driver="wrk")
    _check_common(res, "wrk", 4)
    assert res.http_5xx > 0 and res.timeout > 0
    assert res.sampled_bodies == () and res.sampled_requests == ()
    _check_rows(srv, res)  # wrk abandons what is in flight when each run stops
    assert res.total_ok_including_warmup > res.ok  # the 1 s warm-up run is included
