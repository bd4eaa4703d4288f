"""Issue 13's goals (forkwise.matrix.analysis.goals 3-5), judged from records and the micro-benchmark."""

from __future__ import annotations

import dataclasses

import pytest

from forkwise.matrix.analysis.goals import (
    OVERHEAD_BENCH,
    evaluate,
    goal_batches,
    goal_gpu,
    goal_model_server_overhead,
    goal_no_window_tax,
)
from forkwise.matrix.records.types import Latency, ModelServerStats, Verdict
from test_report import level, memory, record  # tests/ is on sys.path (no __init__.py)


def c1(p50_ms: float):
    return dataclasses.replace(level(1, 300.0), latency=Latency(p50_ms, p50_ms, p50_ms, p50_ms, p50_ms))


def test_the_window_tax_is_the_worst_pair_at_concurrency_1():
    recs = []
    for server, batched_p50 in (("gunicorn-gthread", 1.1), ("uwsgi", 1.5)):
        recs.append(record("child-process", server, model="default", load=(c1(1.0),)))
        recs.append(record("child-process-batched", server, model="default", load=(c1(batched_p50),)))
    goal = goal_no_window_tax(recs)
    assert goal.number == 3 and goal.met is False and goal.ratio == pytest.approx(1.5)
    assert "uwsgi" in goal.measured and goal.cells[0].endswith(".c1")  # the profile to look at: c1
    assert goal_no_window_tax(recs[:2]).met is True  # 1.1x alone
    assert goal_no_window_tax([]).met is None


def test_the_overhead_goal_reads_the_micro_benchmark_and_says_where_it_goes():
    found = {"goal_us": 100, "in_process_us": 500.0, "round_trip_us": 640.0, "overhead_us": 140.0,
             "ipc_us": 40.0, "waiting_us": 60.0, "call_in_server_us": 40.0}
    goal = goal_model_server_overhead({OVERHEAD_BENCH: found})
    assert goal.met is False and goal.ratio == pytest.approx(1.4)
    assert "+140 us" in goal.measured and "waiting for the answer 60 us" in goal.measured
    assert goal_model_server_overhead({OVERHEAD_BENCH: {**found, "overhead_us": 80.0}}).met is True
    assert goal_model_server_overhead({}).met is None


def gpu_cells(batched_rps: float, batched_gpu_mb: float, hang: bool = False):
    out = []
    for backend in ("jax", "torch"):
        for strategy, rps, gpu_mb in (("control", 2000.0, None), ("lazy", 1500.0, 8 * 890.0),
                                      ("child-process-batched", batched_rps, batched_gpu_mb)):
            mem = memory(900.0)
            if gpu_mb is not None:
                mem = dataclasses.replace(mem, total_gpu_mb=gpu_mb)
            verdict = Verdict.HANG if hang and strategy == "child-process-batched" else Verdict.OK
            out.append(record(strategy, "gunicorn-gthread", verdict, workers=8, model="default", device="gpu",
                              backend=backend, load=(level(64, rps),), memory=mem))
    return out


def test_the_gpu_goal_needs_throughput_memory_and_no_hang():
    assert goal_gpu(gpu_cells(1800.0, 890.0)).met is True  # 0.9x control, above lazy, 1/8 of its memory
    assert goal_gpu(gpu_cells(1600.0, 890.0)).met is False  # 0.8x control
    assert goal_gpu(gpu_cells(1800.0, 4000.0)).met is False  # over a quarter of lazy's memory
    hung = goal_gpu(gpu_cells(1800.0, 890.0, hang=True))
    assert hung.met is False and "HANG: child-process-batched/gunicorn-gthread/w8/default/gpu/jax" in hung.measured
    assert goal_gpu([r for r in gpu_cells(1800.0, 890.0) if r.device == "cpu"]).met is None


def test_the_goals_table_holds_issue_13s_goals_first():
    assert [g.number for g in evaluate([], {})] == [1, 2, 3, 4, 5, 6, 7, 8]


def served(largest: int, calls: int = 100) -> ModelServerStats:
    return ModelServerStats(calls=calls, rows=calls * 4, requests=calls * 4, direct=0, padding_rows=0, expired=0,
                            largest_call=largest, calls_by_rows=(calls,), queue_wait_mean_ms=None,
                            queue_wait_p50_ms=None, queue_wait_p99_ms=None, processes=1)


def test_batches_above_8_rows_are_judged_only_where_the_deployment_holds_more_than_8_requests():
    capped = dataclasses.replace(record("child-process-batched", "gunicorn-gthread", load=(level(32, 500.0),)),
                                 threads=4, model_server=served(8))
    assert goal_batches([capped]).met is None  # 2 workers x 4 threads: 8 at most, nothing to judge
    wide = dataclasses.replace(capped, threads=16, model_server=served(8))
    assert goal_batches([capped, wide]).met is False  # it could have, and did not
    filled = dataclasses.replace(wide, model_server=served(27))
    goal = goal_batches([capped, filled])
    assert goal.met is True and "largest call 27 rows" in goal.measured and goal.number == 8
