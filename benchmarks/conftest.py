"""Fixtures for the micro-benchmarks (``tox -e bench``): self-contained, no import from tests/.

A private FORKWISE_HOME with the models built once per session (or the developer's
own FORKWISE_HOME, reused), strategy settings for in-process use, and a check that no
child process (a model server, its supervisor) outlives the session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# The benchmarks import TensorFlow in-process and start model servers: keep its C++ log quiet
# (tox sets this too; a bare `pytest benchmarks` should read the same).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import psutil  # noqa: E402
import pytest  # noqa: E402

from forkwise.testing import live_children, make_settings  # noqa: E402

# The home, spec and settings fixtures: forkwise[test] registers this plugin by its entry point; naming it
# here too keeps a checkout whose install predates the entry point working (pytest loads it once).
pytest_plugins = ["forkwise.pytest_plugin"]


@pytest.fixture(scope="session", autouse=True)
def no_leftover_children():
    """Errors the session if a benchmark left a child process of the runner behind."""
    before = set(live_children())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = {pid: p for pid, p in live_children().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    described = []
    for proc in left.values():
        try:
            described.append((proc.pid, proc.cmdline()[:4]))
        except psutil.Error:
            continue
    assert not described, f"processes left behind by the benchmarks: {described}"


@pytest.fixture(scope="session")
def settings_in():
    """``settings_in(run_dir, strategy, spec_path, **overrides)``: for module-scoped fixtures."""

    def make(run_dir: Path, strategy: str, spec_path: Path, **overrides):
        return make_settings(strategy, spec_path, run_dir, **overrides)

    return make


def _mean_seconds(benchmark, fallback) -> float:
    """The benchmark's mean seconds per call; with --benchmark-disable (no stats), time `fallback` a little."""
    stats = getattr(benchmark, "stats", None)
    if stats:
        return float(stats.stats.mean)
    calls = 20
    start = time.perf_counter()
    for _ in range(calls):
        fallback()
    return (time.perf_counter() - start) / calls


@pytest.fixture(scope="session")
def mean_seconds():
    """``mean_seconds(benchmark, fn)``: seconds per call, from the benchmark's stats when it ran."""
    return _mean_seconds


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Keep the saved JSON small enough to commit: the summary statistics, not every timing."""
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)
