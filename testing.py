"""Helpers for testing and benchmarking strategies, forkwise's own or a team's.

The fixtures live in forkwise.pytest_plugin, which installing forkwise[test] registers with pytest;
this module imports no pytest, so it is safe to use outside a test run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from forkwise.config import AppSettings
from forkwise.errors import ModelUnavailable
from forkwise.strategies.base import Strategy

__all__ = ["make_settings", "live_children", "wait_for_answer"]


def make_settings(strategy: str, spec_path: Path, run_dir: Path, **overrides: Any) -> AppSettings:
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


def wait_for_answer(strategy: Strategy, x: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    """A model server starts in a fresh interpreter: retry until it answers, for at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return strategy.predict(x)
        except ModelUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
