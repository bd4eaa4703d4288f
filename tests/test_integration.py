"""Real servers: the quick matrix profile, `forkwise serve` under bad input, a user's own model.

These start Gunicorn and uWSGI on loopback; each test checks that nothing it started is left.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forkwise.matrix.records.record_schema import json_schema
from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run.runner import load_profile
from forkwise.model.spec import ModelSpec
from forkwise.servers import get as get_server
from host_pace import cell_bound_s, command_bound_s
from owned import new_tag, server_processes, tagged_env

pytestmark = pytest.mark.integration


def forkwise_cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "forkwise", "--home", str(home), *args]


@pytest.mark.parametrize("strategy, server", [
    *((strategy, server) for server in ("gunicorn-sync", "uwsgi") for strategy in ("lazy", "child-process", "control")),
    ("child-process", "gunicorn-gevent"), ("lazy", "gunicorn-gthread"),  # the cells of requests in flight
])
def test_correct_strategies_are_ok(quick_run, strategy, server):
    record = quick_run[1][(strategy, server)]
    assert record.verdict is Verdict.OK, record.evidence
    assert record.launches == 2  # measured in two launches, in two passes
    assert len(record.worker_pids) == 4  # answers came from both workers of each launch, and agreed
    assert record.rows_found == record.rows_expected > 0
    assert record.cold_start_s is not None and record.memory is not None
    assert [level.concurrency for level in record.load] == [1, 8]
    # Requests in flight per worker as the server setting ran them: its own, or the axis's.
    assert record.threads == get_server(server).in_flight(record.in_flight)
    assert all(level.rows_lost == 0 and level.rows_unexplained == 0 and level.rps > 0 for level in record.load)
    assert all(level.sampled > 0 == level.sampled_wrong for level in record.load)
    # Each launch's levels were probed for the host's slow spells; every launch counts.
    assert all(level.host_slowdown > 0 and len(level.launch_rps) == 2 for level in record.load)


@pytest.mark.parametrize("server", ["gunicorn-sync", "uwsgi"])
def test_preload_with_the_default_model_hangs_or_crashes(quick_run, server):
    record = quick_run[1][("preload", server)]
    assert record.verdict in (Verdict.HANG, Verdict.CRASH), record.evidence
    assert record.launches == 1  # a failed cell is not launched again
    assert record.evidence.findings and record.evidence.log_tail  # a failing record carries its evidence
    if record.verdict is Verdict.HANG:  # measured in its failing state: which process was doing what
        assert record.memory is not None and {p.role for p in record.memory.processes} >= {"master", "worker"}
        assert any(f.startswith("CPU time of each worker") for f in record.evidence.findings)
    # Classified by its lack of progress, long before the boot ceiling a computing deployment gets.
    assert record.duration_s < load_profile("quick").limits.boot_timeout_s


def test_records_validate_against_the_schema(quick_run):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    for line in (quick_run[0] / "records.jsonl").read_text().splitlines():
        jsonschema.validate(json.loads(line), schema)


def test_run_publishes_every_format_and_leaves_nothing(quick_run):
    out, records, tag, stderr = quick_run
    for name in ("RESULTS.md", "results.csv", "results.json", "results.html"):
        assert (out / name).stat().st_size > 0
    assert "## Verdict matrix" in (out / "RESULTS.md").read_text()
    assert "[18/18" in stderr and "pass 2/2" in stderr  # 10 cells x 2 launches, less preload's second ones
    assert not server_processes(tag)


def _raw_http(port: int, data: bytes) -> tuple[int, bytes]:
    # A first request may import TensorFlow and load the model: wait as long as this host needs,
    # so a request is never given up on (and sent again) while the server still computes it.
    with socket.create_connection(("127.0.0.1", port), timeout=command_bound_s()) as s:
        s.sendall(data)
        chunks = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks += chunk
    head, _, body = chunks.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post(port: int, body: bytes, content_type: str = "application/json", extra: str = "") -> tuple[int, bytes]:
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
    return _raw_http(port, head.encode() + body)


def test_serve_answers_bad_input_with_4xx_and_stays_correct(home, default_spec_path, tmp_path):
    from forkwise.procs import free_port

    spec = ModelSpec.load(default_spec_path)
    inputs, outputs = spec.reference()
    port = free_port()
    tag = new_tag()
    proc = subprocess.Popen(
        forkwise_cmd(home, "serve", "--strategy", "locked-singleton", "--server", "gunicorn-gthread",
                     "--port", str(port), "--run-dir", str(tmp_path / "run")),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=tagged_env(tag),
    )
    try:
        good = json.dumps({"instances": inputs[:2].tolist()}).encode()
        deadline = time.monotonic() + command_bound_s()
        while True:
            try:
                status, body = _post(port, good)
                if status == 200:
                    break
            except ConnectionError:  # not listening yet: the request never reached the app
                pass
            assert time.monotonic() < deadline, "serve never answered"
            time.sleep(0.3)
        bad = [
            (_post(port, b"{oops"), 400),
            (_post(port, b'{"instances": []}'), 400),
            (_post(port, b'{"instances": [[1, 2]]}'), 422),
            (_post(port, b'{"instances": [[NaN]]}'), 422),
            (_post(port, good, content_type="text/plain"), 415),
            (_raw_http(port, b"GET /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 405),
            # A declared length over the limit is refused before the body is read.
            (_raw_http(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 999999999\r\nConnection: close\r\n\r\n{}"), 413),
        ]
        for (status, body), expected in bad:
            assert status == expected, body[:200]
            assert json.loads(body)["error"]["message"]
        status, body = _post(port, good)
        answer = json.loads(body)
        assert status == 200
        np.testing.assert_allclose(np.asarray(answer["predictions"]), outputs[:2], rtol=1e-5, atol=1e-6)
        stats = json.loads(_raw_http(port, b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[1])
        assert stats["rows"] == 4  # two good requests of two instances; no bad one wrote anything
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=command_bound_s())
    assert proc.returncode == 0
    deadline = time.monotonic() + command_bound_s()
    while server_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server_processes(tag)


def test_a_users_own_model_serves_with_its_own_shape(home, tmp_path):
    model_path = tmp_path / "mine.keras"
    build = ("import keras; keras.utils.set_random_seed(1); "
             "m = keras.Sequential([keras.Input(shape=(4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]); "
             f"m.save({str(model_path)!r})")
    subprocess.run([sys.executable, "-c", build], check=True, capture_output=True, timeout=command_bound_s())
    tag = new_tag()
    proc = subprocess.run(forkwise_cmd(home, "cell", "--strategy", "lazy", "--server", "uwsgi-threads",
                                       "--model", str(model_path)), capture_output=True, text=True,
                          timeout=cell_bound_s(), env=tagged_env(tag))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert record.verdict is Verdict.OK, record.evidence
    assert record.model == "mine"
    assert not server_processes(tag)


def test_cli_errors_are_one_line_and_nonzero(home):
    proc = subprocess.run(forkwise_cmd(home, "cell", "--strategy", "nope", "--server", "uwsgi"),
                          capture_output=True, text=True, timeout=command_bound_s())
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cell: axis strategy: expected one of") and "lazy" in proc.stderr
    assert "got 'nope'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(forkwise_cmd(home, "cell", "--strategy", "lazy", "--server", "uwsgi",
                                       "--model", "/nonexistent/m.keras"),
                          capture_output=True, text=True, timeout=command_bound_s())
    assert proc.returncode == 2 and "no such model file" in proc.stderr and "Traceback" not in proc.stderr


def test_an_interrupted_matrix_stops_everything_it_started(home, default_spec_path, tmp_path):
    tag = new_tag()
    proc = subprocess.Popen(forkwise_cmd(home, "matrix", "--profile", "quick", "--only", "strategy=lazy,server=uwsgi",
                                         "--out", str(tmp_path), "--plain"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=tagged_env(tag))
    deadline = time.monotonic() + command_bound_s()
    while not server_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the cell's server is up
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=command_bound_s())
    assert proc.returncode == 130 and "error: interrupted" in err
    assert not server_processes(tag)
