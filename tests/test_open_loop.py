"""forkwise.matrix.run.open_loop: fixed-rate Poisson load, latency from each intended start, the search
for the highest rate within a p99 budget. Against a fake server on 127.0.0.1 that serves one
request at a time (its capacity is 1 / its service time), no ML runtime."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from forkwise.matrix.run.load import LoadError
from forkwise.matrix.run.open_loop import (
    OpenLoopResult,
    arrivals,
    best_rate,
    find_max_rate,
    p99_with_failures,
    run_open_loop,
)
from host_pace import cell_bound_s

BODY = b'{"instances": [[1.0]]}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server
        self.rfile.read(int(self.headers["Content-Length"]))
        with srv.one_at_a_time:  # one request served at a time: a queue forms past capacity
            srv.count += 1
            stall = srv.stall_s if srv.count == srv.stall_at else 0.0
            time.sleep(srv.service_s + stall)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """(srv, url): srv.service_s per request, one at a time; request number srv.stall_at takes srv.stall_s more."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.handle_error = lambda request, address: None
    srv.one_at_a_time, srv.count = threading.Lock(), 0
    srv.service_s, srv.stall_s, srv.stall_at = 0.002, 0.0, 0
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


# --- the schedule and the budget arithmetic ----------------------------------------------------------


def test_arrivals_are_poisson_at_the_rate_asked():
    times = arrivals(500.0, 4.0, seed=7)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times == sorted(times) and times[0] > 0 and times[-1] < 4.0
    assert abs(len(times) - 2000) < 150  # Poisson count: mean 2000, sd ~45
    assert statistics.mean(gaps) == pytest.approx(1 / 500, rel=0.08)
    assert statistics.stdev(gaps) == pytest.approx(1 / 500, rel=0.1)  # exponential: sd equals the mean
    assert arrivals(500.0, 4.0, seed=7) == times  # the seed fixes the schedule


def test_a_failed_request_counts_as_over_any_budget():
    ok = [0.001 * i for i in range(100, 0, -1)]  # 100 answers of 1..100 ms
    assert p99_with_failures(ok, 0) == pytest.approx(99.0)
    assert p99_with_failures(ok, 1) == pytest.approx(100.0)  # 101 requests: the 100th is the slowest answer
    assert p99_with_failures(ok, 2) is None  # 2 of 102 failed: p99 lies among the failures


def _result(rate: float, p99_all_ms: float | None, lag_ms: float = 0.0) -> OpenLoopResult:
    return OpenLoopResult(rate, 1.0, int(rate), int(rate), 0, 0, 0, 0, {"p50": 1.0, "p90": 1.0, "p99": 1.0,
                          "max": 1.0, "mean": 1.0}, p99_all_ms, lag_ms, 1, 0.1, int(rate), 0)


def test_fixed_rates_stop_at_the_first_rate_over_budget():
    capacity = 300.0
    tried = find_max_rate(lambda r: _result(r, 10.0 if r <= capacity else 500.0), 50.0, rates=(400, 100, 200, 800))
    assert [t.rate_rps for t in tried] == [100, 200, 400]  # ascending; 800 is not tried once 400 missed
    assert best_rate(tried, 50.0) == 200


def test_the_search_bisects_below_the_closed_loop_peak():
    capacity = 317.0
    tried = find_max_rate(lambda r: _result(r, 10.0 if r <= capacity else 500.0), 50.0, peak_rps=400.0, steps=6)
    assert len(tried) == 6 and tried[0].rate_rps == 240.0  # half of 1.2 x the peak
    best = best_rate(tried, 50.0)
    assert capacity * 0.9 < best <= capacity  # 6 halvings of 480 rps: within 7.5 rps


def test_the_search_doubles_without_a_peak_and_a_late_driver_fails_the_rate():
    tried = find_max_rate(lambda r: _result(r, 10.0, lag_ms=0.0 if r < 300 else 6.0), 50.0, steps=5, start_rps=50)
    assert [t.rate_rps for t in tried][:4] == [50, 100, 200, 400]  # doubling until 400 misses (driver late)
    assert best_rate(tried, 50.0) < 400


# --- against a server on loopback -------------------------------------------------------------------


def test_a_rate_under_capacity_is_carried_with_the_service_time(server):
    srv, url = server
    res = run_open_loop(url, [BODY], rate_rps=100.0, warmup_s=0.2, duration_s=1.5, timeout_s=5.0, seed=1)
    assert res.failed == 0 and res.ok == res.sent
    assert 100 <= res.sent <= 200  # Poisson: mean 150
    assert res.achieved_rps == pytest.approx(res.sent / 1.5)
    assert res.latency_ms["p50"] >= srv.service_s * 1000  # at least the service time, from the intended start
    assert res.within(p99_budget_ms=1000.0)
    assert res.total_ok_including_warmup >= res.ok and srv.count >= res.total_ok_including_warmup


def test_latency_counts_from_the_intended_start_through_a_stall(server):
    srv, url = server
    srv.stall_at, srv.stall_s = 20, 0.4  # the 20th request holds the server 0.4 s
    # One connection: requests due during the stall wait for it, unsent. Timed from their send,
    # they would look fast; from their intended start, a stalled server shows.
    res = run_open_loop(url, [BODY], rate_rps=100.0, warmup_s=0.0, duration_s=1.5, timeout_s=5.0, seed=2,
                        max_connections=1)
    assert res.failed == 0
    assert res.latency_ms["max"] >= 300.0
    assert res.latency_ms["p90"] >= 50.0  # ~40 requests were due during the stall, of ~150
    assert not res.within(p99_budget_ms=100.0)


def test_a_rate_over_capacity_misses_the_budget_and_a_lower_one_meets_it(server):
    srv, url = server
    srv.service_s = 0.01  # capacity 100 rps
    low, high = (run_open_loop(url, [BODY], rate, 0.0, 1.0, 5.0, seed=3) for rate in (30.0, 250.0))
    # Over capacity the queue grows for the whole window: by its end 150 requests wait for 10 ms each,
    # so the slowest wait about 1.5 s on any host (longer on a slower one). The budget sits between
    # the two rates' p99s as this host measured them: the verdicts do not follow the host's speed.
    assert high.latency_ms["p99"] > 0.5 * (250.0 - 100.0) / 100.0 * 1000.0 > low.latency_ms["p99"] / 2
    budget = (low.latency_ms["p99"] * high.latency_ms["p99"]) ** 0.5
    assert low.within(budget) and not high.within(budget)


def test_bad_arguments_and_non_loopback_urls_are_refused():
    with pytest.raises(LoadError):
        run_open_loop("http://10.0.0.1:80/predict", [BODY], 10.0, 0.0, 1.0, 1.0)
    with pytest.raises(LoadError):
        run_open_loop("http://127.0.0.1:80/predict", [BODY], 0.0, 0.0, 1.0, 1.0)


# --- a cell asks for it --------------------------------------------------------------------------


@pytest.mark.integration
def test_a_cell_records_the_highest_rate_within_its_budget(home, tiny_spec_path):
    import json
    import subprocess
    import sys

    from forkwise.matrix.records.types import CellRecord, Verdict

    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--strategy", "control",
           "--server", "gunicorn-sync", "--model", "tiny", "--load", "4", "--duration", "1", "--intervals", "1",
           "--open-loop", "--rates", "20,40", "--p99-budget-ms", "1000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cell_bound_s())
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert record.verdict is Verdict.OK, record.evidence
    found = record.open_loop
    assert found is not None and found.p99_budget_ms == 1000.0
    assert [lv.rate_rps for lv in found.levels] == [20.0, 40.0]  # both carried: a control far below its peak
    assert all(lv.within_budget and lv.requests > 0 and lv.rows_found >= lv.rows_expected for lv in found.levels)
    assert found.max_rate_rps == 40.0
