"""Verdicts that do not follow the host's speed.

A request timeout far below TensorFlow's import time stands in for a host several times slower
than this one: a first request that imports the runtime inside the route outlives it, yet the
deployment is computing, not hung, and the cell must still be OK. A deployment blocked after
fork uses no CPU at all and must still be a HANG. `tox -e slow` runs these (and every other
test) on one core shared with a busy process, where the same verdicts must hold.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run.http import post_json
from forkwise.matrix.run.progress import ProgressWatch, Sample
from forkwise.procs import free_port
from host_pace import cell_bound_s

# Far below the ~2-6 s a first request takes when it imports TensorFlow: a very slow host.
TINY_TIMEOUT_S = "1.0"


def run_cell(home, *args: str) -> CellRecord:
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cell_bound_s())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.integration
@pytest.mark.parametrize("strategy, server", [
    ("import-in-route", "gunicorn-gthread"),
    ("import-in-route", "uwsgi-threads"),
    ("locked-singleton", "gunicorn-gthread"),
])
def test_a_first_request_that_loads_the_runtime_is_slow_not_hung(home, default_spec_path, strategy, server):
    record = run_cell(home, "--strategy", strategy, "--server", server, "--request-timeout", TINY_TIMEOUT_S,
                      "--load", "8", "--duration", "1", "--intervals", "1", "--warmup", "0")
    assert record.verdict is Verdict.OK, record.evidence
    first = record.evidence.timings_s["first_request_s"]
    assert first > float(TINY_TIMEOUT_S)  # it outlived the timeout...
    assert any("slow, not hung" in f for f in record.evidence.findings)  # ...and was reported as slow
    assert record.settings["patience_s"] >= 3 * record.cold_start_s - 0.01  # later requests wait by the cold start


@pytest.mark.integration
def test_a_deployment_blocked_after_fork_hangs_whatever_the_timeout(home, default_spec_path):
    record = run_cell(home, "--strategy", "preload", "--server", "gunicorn-sync", "--request-timeout", TINY_TIMEOUT_S)
    assert record.verdict is Verdict.HANG, record.evidence
    assert any("made no progress" in f for f in record.evidence.findings), record.evidence.findings


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


@pytest.mark.parametrize("code, computing", [
    ("import time; time.sleep(60)", False),  # blocked: no CPU at all
    ("while True: pass", True),  # computing
])
def test_progress_tells_computing_from_blocked(code, computing):
    proc = _child(code)
    try:
        with ProgressWatch(proc.pid, interval_s=0.05) as watch:
            time.sleep(1.0)
            assert watch.computing(1.0) is computing
    finally:
        proc.kill()
        proc.wait()


class SilentServer:
    """Accepts connections on loopback, reads the request, answers only when told to."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.sock.getsockname()[1]
        self.answer = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            self.answer.wait(30)
            body = b'{"ok": true}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    def close(self) -> None:
        self.answer.set()
        self.sock.close()


def test_a_request_waits_while_the_deployment_computes_and_gives_up_when_it_stops():
    server = SilentServer()
    asked = []

    def keep_waiting(slice_s: float) -> bool:
        asked.append(slice_s)
        if len(asked) == 3:
            server.answer.set()  # the deployment finished its work: the answer comes
        return True

    try:
        reply = post_json("127.0.0.1", server.port, "/", {}, timeout_s=0.05, keep_waiting=keep_waiting, ceiling_s=30)
        assert reply.kind == "ok" and reply.body == {"ok": True} and len(asked) >= 3
    finally:
        server.close()

    server = SilentServer()
    try:
        reply = post_json("127.0.0.1", server.port, "/", {}, timeout_s=0.05, keep_waiting=lambda s: False,
                          ceiling_s=30)
        assert reply.kind == "timeout" and "made no progress" in reply.error
    finally:
        server.close()


def test_longest_idle_stretch_from_samples():
    """The blocked stretch of a window, from (time, CPU seconds so far) samples: 1 s computing, 3 s
    at no CPU, 1 s computing; a stretch that ends inside computing is not idle."""
    watch = ProgressWatch(master_pid=os.getpid())
    samples = [(t / 10, t / 10) for t in range(0, 11)]  # computing: a core's worth
    samples += [(1.0 + t / 10, 1.0) for t in range(1, 31)]  # 1.0-4.0 s: idle
    samples += [(4.0 + t / 10, 1.0 + t / 10) for t in range(1, 11)]  # 4.0-5.0 s: computing
    watch._samples.extend(Sample(at, total, 0.0, 0.0, {}) for at, total in samples)  # no model server, no worker
    assert watch.longest_idle_s(0.0, 5.0) == pytest.approx(3.0, abs=0.11)
    assert watch.longest_idle_s(0.0, 2.0) == pytest.approx(1.0, abs=0.11)  # the window bounds it
    assert watch.longest_idle_s(4.2, 5.0) == 0.0
