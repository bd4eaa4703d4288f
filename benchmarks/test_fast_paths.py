"""What a strategy costs per request once its model is loaded: the fast paths.

Goal (recorded, never asserted): the locked-singleton fast path costs at most 1 us over
a plain global. Speed goals live in the benchmark record and the matrix, not in
asserting tests; each benchmark writes its goal and its measured value to extra_info.
"""

from __future__ import annotations

import timeit

import numpy as np
import pytest

from forkwise.model.runtime import Predictor, load_predictor
from forkwise.strategies import registry

GOAL_OVERHEAD_NS = 1000

# The baseline: a module-level global holding a predictor-like object, read via a function.
_MODEL = Predictor(lambda x: x, (8,))


def get() -> Predictor:
    return _MODEL


def measure_overhead_ns(fast_path, number: int, repeat: int) -> dict[str, float]:
    """Per-call ns of `fast_path` and of the plain global (min of `repeat`, interleaved), and the difference."""
    global_s, fast_s = [], []
    for _ in range(repeat):
        global_s.append(timeit.timeit(get, number=number))
        fast_s.append(timeit.timeit(fast_path, number=number))
    global_ns = min(global_s) / number * 1e9
    fast_ns = min(fast_s) / number * 1e9
    overhead = fast_ns - global_ns
    return {
        "goal_overhead_ns": GOAL_OVERHEAD_NS,
        "overhead_ns": round(overhead, 1),
        "goal_met": bool(overhead <= GOAL_OVERHEAD_NS),
        "plain_global_ns": round(global_ns, 1),
        "fast_path_ns": round(fast_ns, 1),
        "timeit_number": number,
        "timeit_repeat": repeat,
    }


def drive(strategy, one_row):
    """The app's order in one process: preload (if preloaded), post_fork, one warm call."""
    if strategy.needs.preload_app:
        strategy.preload()
    strategy.post_fork()
    strategy.predict(one_row)  # the first call loads (import-in-route, locked-singleton) and traces
    return strategy


@pytest.fixture
def one_row(tiny_spec) -> np.ndarray:
    return np.ascontiguousarray(tiny_spec.reference()[0][:1], dtype=np.float32)


@pytest.fixture
def locked_singleton(settings_for, tiny_spec_path, tiny_spec):
    strategy = registry.get("locked-singleton")(settings_for("locked-singleton", tiny_spec_path), tiny_spec)
    strategy.model()  # loaded: what follows is the double-checked fast path only
    try:
        yield strategy
    finally:
        strategy.on_exit()


@pytest.mark.benchmark(group="fast-path", max_time=0.5, min_rounds=20)
def test_plain_global_access(benchmark):
    result = benchmark(get)
    assert result is _MODEL


@pytest.mark.benchmark(group="fast-path", max_time=0.5, min_rounds=20)
def test_locked_singleton_fast_path(benchmark, locked_singleton):
    model = locked_singleton.model()
    result = benchmark(locked_singleton.model)
    assert result is model
    # This benchmark cannot see test_plain_global_access's stats: measure the baseline inline.
    benchmark.extra_info.update(measure_overhead_ns(locked_singleton.model, number=100_000, repeat=3))
    if benchmark.stats:
        benchmark.extra_info["benchmark_mean_ns"] = round(benchmark.stats.stats.mean * 1e9, 1)


@pytest.mark.benchmark(group="fast-path")
def test_locked_singleton_overhead_vs_global(benchmark, locked_singleton):
    """The goal's own measurement: timeit of both, min per call, then the fast path benchmarked."""
    info = measure_overhead_ns(locked_singleton.model, number=200_000, repeat=5)
    benchmark.extra_info.update(info)
    result = benchmark.pedantic(locked_singleton.model, rounds=50, iterations=10_000, warmup_rounds=1)
    assert result is locked_singleton.model()


# Strategies whose per-request path, once loaded, is the compiled call plus a little Python.
FAST_PATH_STRATEGIES = ["lazy", "preload", "preload-import", "import-in-route", "locked-singleton", "control"]


@pytest.mark.benchmark(group="tiny-predict", max_time=0.5, min_rounds=20)
def test_tiny_predictor_direct(benchmark, tiny_spec, one_row):
    """Baseline for the strategies below: the compiled call alone, no strategy."""
    predictor = load_predictor(tiny_spec.model_path)
    predictor(one_row)
    out = benchmark(predictor, one_row)
    assert out.shape == (1, *tiny_spec.output_shape)


@pytest.mark.parametrize("name", FAST_PATH_STRATEGIES)
@pytest.mark.benchmark(group="tiny-predict", max_time=0.5, min_rounds=20)
def test_strategy_predict_tiny(benchmark, name, settings_for, tiny_spec_path, tiny_spec, one_row):
    """strategy.predict(one row) after the first load: compiled call + strategy overhead."""
    strategy = registry.get(name)(settings_for(name, tiny_spec_path), tiny_spec)
    try:
        drive(strategy, one_row)
        out = benchmark(strategy.predict, one_row)
        assert out.shape == (1, *tiny_spec.output_shape)
        benchmark.extra_info["strategy"] = name
        benchmark.extra_info["model"] = "tiny"
    finally:
        strategy.on_exit()
