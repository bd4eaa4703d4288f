"""Pytest fixtures and helpers for testing and benchmarking strategies, forkwise's own or a team's.

In a conftest.py: ``from forkwise.testing import *`` registers the fixtures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from forkwise.config import AppSettings
from forkwise.errors import ModelUnavailable
from forkwise.model.spec import ModelSpec, ensure_spec

__all__ = [
    "home", "tiny_spec_path", "default_spec_path", "tiny_spec", "default_spec", "settings_for",
    "make_settings", "live_children", "wait_for_answer",
]


def make_settings(strategy: str, spec_path: Path, run_dir: Path, **overrides) -> AppSettings:
    """AppSettings for an in-process app (no web server): the worker path, not preloaded."""
    values = dict(strategy=strategy, model_spec=spec_path, database_url=f"sqlite:///{run_dir / 'test.db'}",
                  run_dir=run_dir, preload_app=False)
    return AppSettings(**{**values, **overrides})


def live_children() -> dict[int, psutil.Process]:
    """This process's live descendants (zombies excluded)."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return found


def wait_for_answer(strategy, x: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    """A model server starts in a fresh interpreter: retry until it answers, for at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return strategy.predict(x)
        except ModelUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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


@pytest.fixture
def settings_for(tmp_path):
    def make(strategy: str, spec_path: Path, **overrides) -> AppSettings:
        return make_settings(strategy, spec_path, tmp_path, **overrides)

    return make
