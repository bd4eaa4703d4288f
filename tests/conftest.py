"""Shared fixtures: a private FORKWISE_HOME with the models built once per session."""

from __future__ import annotations

import pytest

from forkwise.testing import *  # noqa: F401,F403  (home, spec and settings fixtures)
from forkwise.testing import live_children


@pytest.fixture
def no_leftover_children():
    """Fails a test that leaves a child process of the test runner behind."""
    before = set(live_children())
    yield
    left = [p for pid, p in live_children().items() if pid not in before]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()[:4]) for p in left if p.is_running()]}"
