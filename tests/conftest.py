"""Shared fixtures: a private FORKWISE_HOME with the models built once per session."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.records.jsonl import read_records
from forkwise.testing import live_children
from host_pace import TEST_IMPORTS, host_bound_s, quick_bound_s
from owned import new_tag, tagged_env

# The home, spec and settings fixtures: forkwise[test] registers this plugin by its entry point; naming it
# here too keeps a checkout whose install predates the entry point working (pytest loads it once).
pytest_plugins = ["forkwise.pytest_plugin"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Every test without a bound of its own gets one from this host's calibration (host_pace),
    in place of a fixed number of seconds; fixtures bound their own waits (timeout_func_only)."""
    if not items:
        return
    bound = host_bound_s(TEST_IMPORTS)
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(bound))


@pytest.fixture
def no_leftover_children():
    """Fails a test that leaves a child process of the test runner behind."""
    before = set(live_children())
    yield
    left = [p for pid, p in live_children().items() if pid not in before]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()[:4]) for p in left if p.is_running()]}"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, home, default_spec_path):
    """One unsharded run of the quick profile, shared by test_integration and test_shards:
    (its folder, its combined records by (strategy, server), the tag of its processes (owned), its stderr)."""
    out = tmp_path_factory.mktemp("quick")
    tag = new_tag()
    proc = subprocess.run([sys.executable, "-m", "forkwise", "--home", str(home), "matrix", "--profile", "quick",
                           "--out", str(out), "--plain"], capture_output=True, text=True,
                          timeout=quick_bound_s(), env=tagged_env(tag))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The quick profile launches each cell twice; the published records combine the launches.
    records = {(r.strategy, r.server): r for r in combine_all(read_records(out / "records.jsonl"))}
    return out, records, tag, proc.stderr
