"""Real cells and a real `forkwise serve` on a PostgreSQL server of their own (no mock).

Each checks that no server, socket or data directory of PostgreSQL is left behind. Skipped, with
the reason, on a host without PostgreSQL (`.ci/run` installs it).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from forkwise import pg_auth, postgres
from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run.http import post_json, request
from forkwise.procs import free_port
from host_pace import cell_bound_s, command_bound_s

AVAILABLE, WHY_NOT = postgres.available()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not AVAILABLE, reason=f"PostgreSQL: {WHY_NOT}")]


def leftovers() -> tuple[set[str], list[int]]:
    """PostgreSQL directories forkwise made, and processes working in one (removed or not)."""
    prefix = os.path.join(tempfile.gettempdir(), postgres.DIR_PREFIX)
    dirs = set(glob.glob(prefix + "*"))
    procs = [p.info["pid"] for p in psutil.process_iter(["pid", "cwd", "status"])
             if p.info["status"] != psutil.STATUS_ZOMBIE and (p.info["cwd"] or "").startswith(prefix)]
    return dirs, procs


@pytest.fixture
def nothing_left_behind():
    dirs_before, procs_before = leftovers()
    yield
    dirs_after, procs_after = leftovers()
    assert dirs_after <= dirs_before, f"left behind: {dirs_after - dirs_before}"
    assert set(procs_after) <= set(procs_before), f"PostgreSQL processes left: {set(procs_after) - set(procs_before)}"


def run_cell(home, *args: str) -> CellRecord:
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--model", "tiny", "--database",
           "postgresql", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cell_bound_s())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return CellRecord.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_a_cell_on_postgresql_with_the_safe_reset(home, tiny_spec_path, nothing_left_behind):
    """preload-import imports TensorFlow in the master before any connection: the app loads its
    database driver first, or the workers' first TLS connection aborts them (BoringSSL)."""
    record = run_cell(home, "--strategy", "preload-import", "--server", "gunicorn-sync", "--load", "8",
                      "--duration", "1")
    assert record.verdict is Verdict.OK, record.evidence
    assert record.database == "postgresql" and record.db_reset == "new-engine"
    assert record.cell_id == "preload-import/gunicorn-sync/w2/tiny/cpu/postgresql/steady"
    # Each of the 2 workers holds its own connection at least; the cell's own are not counted.
    assert record.db_connections_peak is not None and record.db_connections_peak >= 2
    assert record.load[0].rows_lost == 0 and record.rows_found == record.rows_expected > 0


@pytest.mark.parametrize("reset", ["none", "dispose"])
def test_the_master_queries_before_fork(home, tiny_spec_path, nothing_left_behind, reset):
    """A preloading strategy whose master queried the database: under `none` both workers use the
    master's TLS session, which breaks (a failing verdict, or the server's own log when pre-ping
    hid it from every client); `dispose` gives each worker a session of its own: OK, and clean."""
    record = run_cell(home, "--strategy", "preload-import", "--server", "gunicorn-sync", "--db-in-master",
                      "--db-reset", reset)
    assert record.db_in_master and record.db_reset == reset
    tls_errors = [line for line in record.db_server_log if "SSL error" in line]
    if reset == "none":
        assert not record.verdict.ok or tls_errors, record.evidence
        if not record.verdict.ok:
            assert record.verdict in (Verdict.ERROR, Verdict.WRONG, Verdict.LOST), record.evidence
            assert any("database" in f for f in record.evidence.findings), record.evidence.findings
    else:
        assert record.verdict is Verdict.OK and not tls_errors, (record.evidence, record.db_server_log)


def test_a_restarted_database_answers_503_then_reconnects(home, tiny_spec_path, nothing_left_behind):
    record = run_cell(home, "--strategy", "control", "--server", "gunicorn-sync", "--scenario", "restart-database",
                      "--scenario-duration", "6")
    assert record.verdict is Verdict.OK, record.evidence
    d = record.disruption
    assert "restarted the PostgreSQL server" in d.event and d.recovered
    assert d.failed.timeout == 0 and d.failed.http_5xx == d.http_503  # 503s while down, never a 500
    assert record.rows_found == record.rows_expected > 0  # nothing acknowledged was lost


def test_a_scenario_that_needs_a_database_server_is_refused_on_sqlite(home, tiny_spec_path):
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--model", "tiny", "--strategy", "control",
           "--server", "gunicorn-sync", "--scenario", "restart-database"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=command_bound_s())
    assert proc.returncode == 2 and "needs a database server" in proc.stderr


def owner_of(folder: Path) -> int | None:
    try:
        return int((folder / postgres.OWNER_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):  # another session's cluster, being made or removed now
        return None


def cluster_secrets(owner_pid: int) -> set[str]:
    """The secrets of the PostgreSQL cluster that process `owner_pid` started (read from its passfiles)."""
    folders = [f for f in Path(tempfile.gettempdir()).glob(postgres.DIR_PREFIX + "*") if owner_of(f) == owner_pid]
    assert len(folders) == 1, f"the cluster of process {owner_pid}: {folders}"
    return {line.rsplit(":", 1)[1] for name in (pg_auth.APP_PASSFILE, pg_auth.ADMIN_PASSFILE)
            for line in (folders[0] / name).read_text().splitlines()}


def assert_no_secret_shown(serve_pid: int) -> None:
    """No process's command line (what `ps` shows anyone) holds the cluster's secrets, and neither
    does the environment of `forkwise serve` and its deployment: it names the passfile instead."""
    secrets = cluster_secrets(serve_pid)
    assert len(secrets) == 2, "the cluster of forkwise serve was not found"
    for p in psutil.process_iter(["cmdline"]):
        assert not any(s in " ".join(p.info["cmdline"] or ()) for s in secrets), f"a secret in the argv of {p.pid}"
    tree = [psutil.Process(serve_pid), *psutil.Process(serve_pid).children(recursive=True)]
    environs = [p.environ() for p in tree if p.is_running()]
    assert any("passfile=" in env.get("FORKWISE_DATABASE_URL", "") for env in environs)
    assert not [p for env in environs for p in env.values() for s in secrets if s in p]


def test_serve_on_postgresql_stops_everything_it_started(home, tiny_spec_path, tmp_path, nothing_left_behind):
    port = free_port()
    cmd = [sys.executable, "-m", "forkwise", "--home", str(home), "serve", "--model", "tiny", "--strategy", "control",
           "--server", "gunicorn-sync", "--database", "postgresql", "--port", str(port), "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while request("127.0.0.1", port, "GET", "/healthz", timeout_s=2).kind != "ok":  # pytest-timeout bounds it
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        from forkwise.model.spec import ModelSpec

        width = ModelSpec.load(tiny_spec_path).input_shape[0]
        reply = post_json("127.0.0.1", port, "/predict", {"instances": [[0.1] * width]}, command_bound_s())
        assert reply.kind == "ok" and len(reply.body["ids"]) == 1
        assert_no_secret_shown(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=command_bound_s())
    assert proc.returncode == 0, err[-2000:]
    assert "database postgresql" in err
