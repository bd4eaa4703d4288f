"""Shared fixtures: a private FORKWISE_HOME with the models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from forkwise.config import AppSettings
from forkwise.model.spec import ModelSpec, ensure_spec


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


@pytest.fixture
def settings_for(tmp_path):
    """AppSettings for an in-process app (no server): the worker path, not preloaded."""

    def make(strategy: str, spec_path: Path, **overrides) -> AppSettings:
        return AppSettings(
            strategy=strategy, model_spec=spec_path, database_url=f"sqlite:///{tmp_path / 'test.db'}",
            run_dir=tmp_path, preload_app=False, **overrides,
        )

    return make


@pytest.fixture
def no_leftover_children():
    """Fails a test that leaves a child process of the test runner behind."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()[:4]) for p in left]}"
