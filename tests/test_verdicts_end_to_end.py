"""Every verdict, earned end to end: strategies that misbehave on purpose, from a package of their
own installed through the `forkwise.strategies` entry-point group (as a team's would be), run
through the real `forkwise cell` under Gunicorn (and uWSGI once); each gets the verdict it earned,
with the evidence for it in its record. The package's own server setting (`forkwise.servers`)
runs a cell the same way.

No TensorFlow in any deployment here (the strategies answer a constant), and no load: a cell
takes a few seconds. Waits are derived from the cold start of a correct cell of the same package,
measured first in the same module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from forkwise.matrix.records.types import CellRecord, Verdict

pytestmark = pytest.mark.integration

THIRDPARTY = Path(__file__).parent / "thirdparty"
# Waits derived from the measured cold start of a correct cell: a deployment that never answers
# is given this many cold starts before it is judged; a request waits one cold start per slice.
BOOT_COLD_STARTS = 4.0


@pytest.fixture(scope="module")
def thirdparty_site(tmp_path_factory) -> Path:
    """forkwise-misbehaving installed as a distribution of its own: its module and a dist-info
    (METADATA, entry_points.txt from its pyproject.toml) in a directory of their own."""
    site = tmp_path_factory.mktemp("site")
    project = tomllib.loads((THIRDPARTY / "pyproject.toml").read_text())["project"]
    shutil.copytree(THIRDPARTY / "forkwise_misbehaving", site / "forkwise_misbehaving",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items()) + "\n"
        for group, eps in project["entry-points"].items()))
    (info / "top_level.txt").write_text("forkwise_misbehaving\n")
    return site


@pytest.fixture(scope="module")
def cell(home, tiny_spec_path, thirdparty_site):
    """Run `forkwise cell` for a strategy of the package; its record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(thirdparty_site),
                                                                    os.environ.get("PYTHONPATH")]))}

    def run(strategy: str, *args: str, server: str = "gunicorn-sync") -> CellRecord:
        argv = [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--strategy", strategy,
                "--server", server, "--model", "tiny", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        return CellRecord.from_dict(json.loads(lines[-1]))

    return run


@pytest.fixture(scope="module")
def correct(cell) -> CellRecord:
    return cell("thirdparty-correct")


@pytest.fixture(scope="module")
def boot_timeout(correct) -> str:
    """Long enough for a correct deployment of this package to answer on this host, with a margin."""
    return f"{BOOT_COLD_STARTS * correct.cold_start_s:.2f}"


def findings(record: CellRecord) -> str:
    return "\n".join(record.evidence.findings)


def may_trace_workers() -> bool:
    """Whether py-spy may read another process's stack here: as root, or where Yama's ptrace
    scope does not restrict tracing to one's own descendants (the workers are not the cell's)."""
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    return os.geteuid() == 0 or not scope.exists() or scope.read_text().strip() == "0"


def test_a_third_party_strategy_that_keeps_every_promise_is_ok(correct):
    assert correct.verdict is Verdict.OK, correct.evidence
    assert correct.strategy == "thirdparty-correct" and correct.cold_start_s > 0
    assert len(correct.worker_pids) == 2 and correct.rows_found == correct.rows_expected > 0


def test_a_third_party_server_setting_runs_a_cell_and_its_own_log_lines_are_evidence(cell):
    """gunicorn-sync-loud comes from the package's `forkwise.servers` entry point, with its own telling
    pattern for a line its server writes: forkwise runs it and reads its log with it, unchanged."""
    record = cell("control", server="gunicorn-sync-loud")
    assert record.verdict is Verdict.OK, record.evidence
    assert record.server == "gunicorn-sync-loud" and len(record.worker_pids) == 2
    assert any("forkwise-loud: master" in line and "ready for 2 workers" in line
               for line in record.evidence.log_highlights), record.evidence.log_highlights


@pytest.mark.parametrize("server", ["gunicorn-sync", "uwsgi"])
def test_wrong_answers_are_wrong(cell, server):
    record = cell("thirdparty-wrong", server=server)
    assert record.verdict is Verdict.WRONG, record.evidence
    assert record.errors.wrong > 0 and record.ok == 0
    assert "answer off the reference (max abs diff 1)" in findings(record)


def test_a_500_is_an_error(cell):
    record = cell("thirdparty-500")
    assert record.verdict is Verdict.ERROR, record.evidence
    assert "HTTP 500" in findings(record) and "verification answers were 5xx" in findings(record)
    assert any("thirdparty-500 fails every request on purpose" in line for line in record.evidence.log_highlights)


def test_a_request_blocked_forever_is_a_hang_with_the_workers_stacks(cell, correct):
    record = cell("thirdparty-hang", "--request-timeout", f"{correct.cold_start_s:.2f}")
    assert record.verdict is Verdict.HANG, record.evidence
    assert "made no CPU progress" in findings(record) and "CPU time of each worker" in findings(record)
    stacks = record.evidence.stacks
    assert len(stacks) == 2 and all(s.startswith("worker ") for s in stacks), stacks
    if not may_trace_workers():  # no stacks to read here; the evidence must say why
        assert all("no stacks: py-spy dump" in s for s in stacks), stacks
        return
    # One worker took the request and waits in the strategy's predict; the other waits for work.
    blocked = [s for s in stacks if "predict (forkwise_misbehaving/__init__.py" in s]
    assert len(blocked) == 1 and "wait (threading.py" in blocked[0], stacks


def test_one_worker_blocked_while_another_computes_is_a_hang(cell, correct):
    """One worker blocks under load while the other keeps serving, so the deployment as a whole never
    stands idle: the blocked worker's own CPU time is the evidence. The load outlasts the patience
    (3 cold starts), so the healthy worker computes through the whole wait; no warm-up, so the block
    falls in the measured level. (Judged on the deployment's CPU alone, this was an ERROR.)"""
    cold = correct.cold_start_s
    record = cell("thirdparty-hang-one-worker", "--request-timeout", f"{cold:.2f}", "--load", "8",
                  "--warmup", "0", "--duration", f"{3 * cold + 2:.2f}", "--driver", "builtin")
    assert record.verdict is Verdict.HANG, record.evidence
    assert record.load, record.evidence
    level = record.load[0]
    assert level.errors.timeout >= 1 and level.rps > 0  # the other worker served throughout
    assert level.longest_idle_s < level.blocked_after_s <= level.longest_worker_stall_s, level
    assert "a worker made no CPU progress" in findings(record)


def test_a_worker_that_exits_is_a_crash(cell):
    record = cell("thirdparty-exit")
    assert record.verdict is Verdict.CRASH, record.evidence
    assert "workers died or were respawned" in findings(record)


def test_a_deployment_that_never_becomes_ready_is_boot(cell, boot_timeout):
    record = cell("thirdparty-never-ready", "--boot-timeout", boot_timeout)
    assert record.verdict is Verdict.BOOT, record.evidence
    assert "no correct answer before the boot deadline" in findings(record)
    assert "'5xx'" in findings(record) and record.cold_start_s is None  # it said 503, again and again


def test_an_acknowledged_row_that_goes_missing_is_lost(cell):
    record = cell("thirdparty-lose-row")
    assert record.verdict is Verdict.LOST, record.evidence
    assert "acknowledged rows are missing" in findings(record)
    assert record.rows_found < record.rows_expected


def test_a_row_nobody_acknowledged_is_lost(cell):
    record = cell("thirdparty-extra-row")
    assert record.verdict is Verdict.LOST, record.evidence
    assert f"rows for {record.rows_expected} acknowledged" in findings(record)
    assert record.rows_found == record.rows_expected  # every answer's row is there, and more


def test_answers_from_one_worker_only_are_wrong(cell, boot_timeout):
    record = cell("thirdparty-one-worker", "--boot-timeout", boot_timeout)
    assert record.verdict is Verdict.WRONG, record.evidence
    assert "only 1 of 2 workers answered" in findings(record) and len(record.worker_pids) == 1


def test_a_failure_with_out_of_memory_in_the_log_is_oom(cell):
    record = cell("thirdparty-oom")
    assert record.verdict is Verdict.OOM, record.evidence
    assert record.evidence.findings[0].startswith("out of memory (otherwise ERROR); the server log shows: ")
    assert "CUDA out of memory" in record.evidence.findings[0]


def test_a_neighbour_that_starts_computing_after_the_event_leaves_a_recovered_cell_ok(cell):
    """kill-worker on a strategy whose replacement worker starts a busy neighbour on every core: the
    rate after the event falls with the cores the neighbour takes, and the cell is still judged
    recovered, since recovery is judged against what the rest of the machine left it."""
    record = cell("thirdparty-neighbour-after-respawn", "--scenario", "kill-worker")
    d = record.disruption
    assert d is not None and d.at_s is not None and len(d.host_shares) == len(d.rps_samples)
    event = int(d.at_s / d.interval_s)
    assert min(d.host_shares[event + 2:]) < 0.6, d.host_shares  # the neighbour took cores after the event
    assert record.verdict is Verdict.OK and d.recovered, findings(record)


def test_a_readiness_probe_that_says_ready_while_requests_fail_is_an_error(cell, correct):
    """/readyz says ready (the warm-up answered) while every request gets a 503 for 2.5 s: ERROR, with
    how long it lied; a correct cell's probe said ready no earlier than it served."""
    record = cell("thirdparty-ready-too-soon")
    assert record.verdict is Verdict.ERROR and "/readyz said ready" in findings(record)
    assert record.readiness is not None and record.readiness.ready_early_s >= 1.5
    assert correct.readiness is not None and correct.readiness.ready_early_s == 0.0


SOAK_S = "24"  # seconds of the soak (12 intervals of 2 s), after a capacity probe of 2.4 s


def test_a_soak_finds_a_planted_leak_with_its_curve(cell):
    """A strategy that keeps 16 KiB of every request answers correctly, and its memory grows with
    the requests: LEAK, with the growth fitted (per 10 minutes and per 10,000 requests) and every
    interval's samples as evidence. Rows: one per 200, none lost."""
    record = cell("thirdparty-leak", "--scenario", "soak", "--soak-duration", SOAK_S)
    assert record.verdict is Verdict.LEAK, record.evidence
    soak = record.soak
    assert soak is not None and soak.rss is not None and len(soak.intervals) >= 12
    assert soak.rss.per_10min_low > 5.0 and soak.rss.per_10k_requests > 0
    assert "total_rss_mb grew" in findings(record)
    assert soak.rows_found == soak.rows_expected > 0
    assert soak.failures("timeout") == soak.failures("http_5xx") == soak.failures("http_4xx") == 0
    assert soak.intervals[-1].total_rss_mb > soak.intervals[0].total_rss_mb
    assert all(p.fds > 0 for i in soak.intervals for p in i.processes)
    assert all(i.db_connections is None for i in soak.intervals)  # SQLite: not applicable


def test_a_soak_of_the_control_is_ok(cell):
    """The same soak of forkwise's control (it answers a constant, keeps nothing): nothing grows
    beyond the bound, no row lost."""
    record = cell("control", "--scenario", "soak", "--soak-duration", SOAK_S)
    assert record.verdict is Verdict.OK, record.evidence
    soak = record.soak
    assert soak is not None and soak.rss is not None and soak.fds is not None
    assert soak.rss.per_10min_low <= 5.0 and soak.fds.per_10min_low <= 4.0
    assert soak.rate_rps == pytest.approx(0.5 * soak.capacity_rps, abs=0.1)
    assert soak.rows_found == soak.rows_expected > 0
    assert soak.failures("timeout") == soak.failures("http_5xx") == soak.failures("http_4xx") == 0
