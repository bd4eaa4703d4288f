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

from forkwise.config import AppSettings  # noqa: E402
from forkwise.model.spec import ModelSpec, ensure_spec  # noqa: E402


def make_settings(strategy: str, spec_path: Path, run_dir: Path, **overrides) -> AppSettings:
    """AppSettings for an in-process app (no web server), as the test suite builds them."""
    values = dict(
        strategy=strategy, model_spec=spec_path, database_url=f"sqlite:///{run_dir / 'bench.db'}",
        run_dir=run_dir, preload_app=False,
    )
    values.update(overrides)
    return AppSettings(**values)


def _live_children() -> dict[int, psutil.Process]:
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leftover_children():
    """Errors the session if a benchmark left a child process of the runner behind."""
    before = set(_live_children())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = {pid: p for pid, p in _live_children().items() if pid not in before}
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
def home(tmp_path_factory) -> Path:
    # Reuse a developer's cache when FORKWISE_HOME is set; otherwise build into a temp dir.
    env = os.environ.get("FORKWISE_HOME")
    return Path(env) if env else tmp_path_factory.mktemp("forkwise-home")


@pytest.fixture(scope="session")
def tiny_spec_path(home) -> Path:
    return ensure_spec(home, "tiny")


@pytest.fixture(scope="session")
def default_spec_path(home) -> Path:
    return ensure_spec(home, "default")


@pytest.fixture(scope="session")
def tiny_spec(tiny_spec_path) -> ModelSpec:
    return ModelSpec.load(tiny_spec_path)


@pytest.fixture(scope="session")
def default_spec(default_spec_path) -> ModelSpec:
    return ModelSpec.load(default_spec_path)


@pytest.fixture(scope="session")
def settings_in():
    """``settings_in(run_dir, strategy, spec_path, **overrides)``: for module-scoped fixtures."""

    def make(run_dir: Path, strategy: str, spec_path: Path, **overrides) -> AppSettings:
        return make_settings(strategy, spec_path, run_dir, **overrides)

    return make


@pytest.fixture
def settings_for(tmp_path):
    """AppSettings for an in-process app (no server): the worker path, not preloaded."""

    def make(strategy: str, spec_path: Path, **overrides) -> AppSettings:
        return make_settings(strategy, spec_path, tmp_path, **overrides)

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
