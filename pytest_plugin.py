"""The pytest plugin forkwise[test] registers (entry point ``pytest11``): fixtures for testing a
strategy, forkwise's own or a team's: a FORKWISE_HOME, the built model specs, in-process settings.

A project that installs forkwise[test] gets them with no conftest line; the helpers they use are in
forkwise.testing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forkwise.config import AppSettings
from forkwise.model.spec import ModelSpec, ensure_spec
from forkwise.testing import make_settings


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Reuse a developer's cache when FORKWISE_HOME is set; otherwise build into a temp dir.
    env = os.environ.get("FORKWISE_HOME")
    return Path(env) if env else tmp_path_factory.mktemp("forkwise-home")


@pytest.fixture(scope="session")
def tiny_spec_path(home: Path) -> Path:
    return ensure_spec(home, "tiny")


@pytest.fixture(scope="session")
def default_spec_path(home: Path) -> Path:
    return ensure_spec(home, "default")


@pytest.fixture(scope="session")
def tiny_spec(tiny_spec_path: Path) -> ModelSpec:
    return ModelSpec.load(tiny_spec_path)


@pytest.fixture(scope="session")
def default_spec(default_spec_path: Path) -> ModelSpec:
    return ModelSpec.load(default_spec_path)


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., AppSettings]:
    def make(strategy: str, spec_path: Path, **overrides: Any) -> AppSettings:
        return make_settings(strategy, spec_path, tmp_path, **overrides)

    return make
