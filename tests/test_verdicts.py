"""Every verdict rule (forkwise.matrix.verdicts), one case each, and the precedence between them."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from pathlib import Path

import pytest

from forkwise.matrix import verdicts as vd
from forkwise.matrix.records.types import Disruption, ErrorCounts, Latency, LoadLevel, Verdict
from forkwise.matrix.run import cell_process, runner
from forkwise.matrix.verdicts import (
    Answers,
    BadInputSeen,
    DisruptionSeen,
    Judgement,
    LogSeen,
    RowsSeen,
    VerificationSeen,
    Workers,
)

V = Verdict
TWO = Workers(configured=2, seen=(11, 12))


def verification(first: str = "ok", workers_answered: int = 2, workers: Workers = TWO, healthy: bool = True,
                 server_alive: bool = True, **answers) -> VerificationSeen:
    counts = {"ok": 32, **answers}
    return VerificationSeen(healthy=healthy, first=first, answers=Answers(**counts), workers_answered=workers_answered,
                            workers=workers, server_alive=server_alive, patience_s=6.0)


def check(judgement: Judgement, verdict: Verdict, *phrases: str) -> None:
    assert judgement.verdict is verdict, judgement
    for phrase in phrases:
        assert any(phrase in f for f in judgement.findings), (phrase, judgement.findings)


# --- verification ----------------------------------------------------------------------------


def test_a_correct_verification_is_ok_with_no_findings():
    assert vd.judge_verification(verification()) == Judgement(V.OK, ())


@pytest.mark.parametrize("seen, verdict, phrase", [
    (verification(healthy=False, first="boot", ok=0), V.BOOT, "never answered /healthz"),
    (verification(workers=Workers(2, (11, 12, 13), (11,))), V.CRASH, "3 worker pids seen for 2 workers"),
    (verification(workers=Workers(2, (11, 12), (12,))), V.CRASH, "vanished [12]"),
    (verification(timeout=1, stalled=1), V.HANG, "made no CPU progress"),
    (verification(timeout=2), V.HANG, "2 requests timed out"),
    (verification(first="timeout", ok=0, timeout=1, busy=1, workers_answered=0), V.BOOT,
     "still being computed at the boot deadline"),
    (verification(timeout=1, busy=1), V.HANG, "although the deployment kept computing"),
    (verification(server_alive=False), V.CRASH, "the server exited"),
    (verification(first="5xx", ok=0, http_5xx=1, workers_answered=0), V.ERROR, "1 verification answers were 5xx"),
    (verification(first="connect", ok=0, workers_answered=0), V.BOOT, "no correct answer before the boot deadline"),
    (verification(first="wrong", ok=0, wrong=1, workers_answered=0), V.WRONG, "off the reference"),
    (verification(wrong=3), V.WRONG, "3 verification answers were off the reference"),
    (verification(connect=1), V.WRONG, "1 failed connections"),
    (verification(http_4xx=2), V.WRONG, "2 4xx answers"),
    (verification(workers_answered=1), V.WRONG, "only 1 of 2 workers answered 32 requests"),
])
def test_each_verification_rule(seen, verdict, phrase):
    check(vd.judge_verification(seen), verdict, phrase)


def test_one_worker_configured_needs_one_worker_answering():
    one = Workers(configured=1, seen=(11,))
    assert vd.judge_verification(verification(workers=one, workers_answered=1)).verdict is V.OK


def test_most_severe_rule_wins_and_every_fired_rule_is_kept():
    died = Workers(2, (11, 12, 13), (11,))
    check(vd.judge_verification(verification(workers=died, timeout=1, stalled=1, http_5xx=2, wrong=1)),
          V.HANG, "no CPU progress", "worker pids seen", "5xx", "off the reference")
    judgement = vd.judge_verification(verification(workers=died, http_5xx=1))
    assert judgement.verdict is V.CRASH and judgement.findings[0].startswith("workers died")
    check(vd.judge_verification(verification(http_5xx=1, wrong=1)), V.ERROR, "off the reference")


def test_a_5xx_first_answer_is_an_error_not_a_deployment_that_never_booted():
    judgement = vd.judge_verification(verification(first="5xx", ok=0, http_5xx=1, workers_answered=0))
    assert judgement.verdict is V.ERROR
    assert not any("boot deadline" in f or "workers answered" in f for f in judgement.findings)


# --- rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, verdict, phrase", [
    (RowsSeen(acknowledged=10, total=10), V.OK, None),
    (RowsSeen(acknowledged=10, missing=(3, 4), total=8), V.LOST, "2 acknowledged rows are missing, e.g. ids [3, 4]"),
    (RowsSeen(acknowledged=10, differing=(5,), total=10), V.LOST, "1 rows hold other outputs"),
    (RowsSeen(acknowledged=10, total=11), V.LOST, "the table holds 11 rows for 10 acknowledged"),
    (RowsSeen(acknowledged=10, total=12, slack=2), V.OK, None),
    (RowsSeen(acknowledged=10, total=13, slack=2), V.LOST, "(2 requests unanswered)"),
])
def test_each_rows_rule(rows, verdict, phrase):
    judgement = vd.judge_rows(rows)
    check(judgement, verdict, *([phrase] if phrase else []))
    assert rows.intact == rows.acknowledged - len(rows.missing) - len(rows.differing)


# --- load ------------------------------------------------------------------------------------


def level(concurrency: int = 8, driver: str = "builtin", **changes) -> LoadLevel:
    errors = ErrorCounts(**{k: changes.pop(k) for k in ("timeout", "connect", "http_5xx") if k in changes})
    base = LoadLevel(concurrency=concurrency, duration_s=2.0, requests=1000, rps=500.0, rps_stdev=5.0,
                     rps_samples=(495.0, 505.0), latency=Latency(1.0, 2.0, 3.0, 4.0, 1.5), errors=errors,
                     rows_expected=1000, rows_found=1000, unacknowledged=0, sampled=50, sampled_wrong=0,
                     driver=driver, driver_cpu_s=1.0, server_cpu_s=2.0)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("lv, verdict, phrase", [
    (level(), V.OK, None),
    (level(timeout=3), V.HANG, "3 requests got no answer within the cell's patience under load at concurrency 8 "
     "(progress not watched)"),
    (level(timeout=3, longest_idle_s=5.5, blocked_after_s=5.0), V.HANG, "no CPU progress for 5.5 s"),
    (level(timeout=3, longest_idle_s=0.6, blocked_after_s=5.0), V.ERROR, "starved or dropped, not a hang"),
    (level(http_5xx=2), V.ERROR, "2 answers were 5xx"),
    (level(sampled_wrong=4), V.WRONG, "4 of 50 sampled answers were off"),
    (level(rows_found=990), V.LOST, "1000 rows acknowledged, 990 written"),
    (level(rows_found=1005, unacknowledged=2), V.LOST, "1005 written, 2 requests unanswered"),
    (level(rows_found=1002, unacknowledged=2), V.OK, None),
    (level(connect=11), V.ERROR, "11 connections failed"),
    (level(connect=10), V.OK, None),  # 1% of 1000 requests: tolerated
])
def test_each_load_rule(lv, verdict, phrase):
    check(vd.judge_load([lv], TWO), verdict, *([phrase] if phrase else []))


def test_surplus_rows_under_wrk_are_noted_not_judged():
    judgement = vd.judge_load([level(driver="wrk", rows_found=1005)], TWO)
    check(judgement, V.OK, "(wrk: noted, not judged)")


def test_workers_that_died_under_load_crash_the_cell():
    check(vd.judge_load([level()], Workers(2, (11, 12, 13), (12,))), V.CRASH, "workers died or were respawned")


def test_load_takes_the_most_severe_failure_of_any_level():
    judgement = vd.judge_load([level(1, http_5xx=1), level(8, timeout=1)], Workers(2, (11, 12, 13), (12,)))
    check(judgement, V.HANG, "5xx under load at concurrency 1",
          "no answer within the cell's patience under load at concurrency 8", "workers died")


# --- disruption ------------------------------------------------------------------------------


def disruption(**changes) -> Disruption:
    failed = ErrorCounts(**{k: changes.pop(k) for k in ("timeout", "connect", "http_5xx") if k in changes})
    base = Disruption(event="SIGKILL worker 11", at_s=3.0, ok=900, answers_wrong=0, failed=failed, http_503=0,
                      unacknowledged=1, recovery_s=1.2, recovered=True, rps_samples=(100.0,) * 36, interval_s=0.25,
                      workers_answering=(11, 12, 13))
    return dataclasses.replace(base, **changes)


def seen_disruption(dis: Disruption, disrupts_workers: bool = True, has_event: bool = True,
                    workers: Workers = Workers(2, (11, 12, 13), (11,))) -> DisruptionSeen:
    return DisruptionSeen(scenario="kill-worker", has_event=has_event, disrupts_workers=disrupts_workers,
                          disruption=dis, workers=workers)


@pytest.mark.parametrize("seen, verdict, phrase", [
    (seen_disruption(disruption()), V.OK, "event at 3.0 s: SIGKILL worker 11"),
    (seen_disruption(disruption(timeout=2)), V.HANG, "2 requests got no answer within the cell's patience during "
     "kill-worker (progress not watched)"),
    (seen_disruption(disruption(timeout=2, longest_idle_s=6.0, blocked_after_s=5.0)), V.HANG,
     "made no CPU progress for 6.0 s: blocked"),
    (seen_disruption(disruption(timeout=1, longest_idle_s=0.4, blocked_after_s=5.0)), V.ERROR,
     "although the deployment and every worker kept computing"),
    (seen_disruption(disruption(timeout=1, longest_idle_s=0.4, blocked_after_s=5.0, longest_worker_stall_s=4.9)),
     V.ERROR, "although the deployment and every worker kept computing"),
    (seen_disruption(disruption(timeout=1, longest_idle_s=0.4, blocked_after_s=5.0, longest_worker_stall_s=6.5)),
     V.HANG, "a worker made no CPU progress for 6.5 s while others computed: blocked"),
    (seen_disruption(disruption(longest_idle_s=0.4, blocked_after_s=5.0, longest_worker_stall_s=9.0)), V.OK,
     None),  # a worker idle with nobody waiting on it (a low load) is not a hang
    (seen_disruption(disruption(longest_idle_s=9.0, blocked_after_s=5.0)), V.OK, None),  # idle, nobody waiting
    (seen_disruption(disruption(http_5xx=5, http_503=3)), V.ERROR, "2 answers were 5xx other than 503"),
    (seen_disruption(disruption(http_5xx=3, http_503=3)), V.OK, None),
    (seen_disruption(disruption(answers_wrong=1)), V.WRONG, "1 answers were off the reference"),
    (seen_disruption(disruption(recovered=False)), V.CRASH, "did not recover after the event"),
    (seen_disruption(disruption(event="", at_s=None, recovered=False), has_event=False), V.CRASH,
     "did not recover by the end of the window"),
    (seen_disruption(disruption(workers_answering=(12,))), V.CRASH, "no replacement worker answered"),
    (seen_disruption(disruption(event="", at_s=None, workers_answering=(12,)), has_event=False), V.OK, None),
    (seen_disruption(disruption(), disrupts_workers=False), V.CRASH, "workers died or were respawned"),
    (seen_disruption(disruption(), disrupts_workers=False, workers=TWO), V.OK, None),
])
def test_each_disruption_rule(seen, verdict, phrase):
    check(vd.judge_disruption(seen), verdict, *([phrase] if phrase else []))


def test_no_recovery_outranks_500s_and_the_event_note_comes_first():
    judgement = vd.judge_disruption(seen_disruption(disruption(http_5xx=1, recovered=False)))
    assert judgement.verdict is V.CRASH
    assert judgement.findings[0].startswith("event at") and "did not recover" in judgement.findings[1]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("seen, verdict, phrase", [
    (BadInputSeen(ErrorCounts(), Answers(ok=64), 32), V.OK, None),
    (BadInputSeen(ErrorCounts(timeout=1), Answers(ok=64), 32), V.HANG, "1 malformed requests got no answer"),
    (BadInputSeen(ErrorCounts(), Answers(ok=63, timeout=1, stalled=1), 32), V.HANG, "no CPU progress"),
    (BadInputSeen(ErrorCounts(http_5xx=2), Answers(ok=64), 32), V.ERROR, "bad input got 2 5xx"),
    (BadInputSeen(ErrorCounts(connect=1), Answers(ok=64), 32), V.ERROR, "1 failed connections"),
    (BadInputSeen(ErrorCounts(), Answers(ok=63, http_5xx=1), 32), V.ERROR, "after bad input were 5xx"),
    (BadInputSeen(ErrorCounts(), Answers(ok=63, wrong=1), 32), V.WRONG, "off the reference"),
    (BadInputSeen(ErrorCounts(), Answers(ok=32), 0), V.WRONG, "no verification request was sent"),
])
def test_each_bad_input_rule(seen, verdict, phrase):
    check(vd.judge_bad_input(seen), verdict, *([phrase] if phrase else []))


# --- out of memory ---------------------------------------------------------------------------

OOM_LINE = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
GUESS = "[ERROR] Worker (pid:7) was sent SIGKILL! Perhaps out of memory?"


GUESS_PATTERN = r"Perhaps out of memory\?"  # as a gunicorn adapter declares it (oom_false_alarms)


def test_a_failure_with_an_out_of_memory_line_is_oom_and_says_what_it_was_otherwise():
    judgement = vd.judge_oom(Judgement(V.ERROR, ("1 answers were 5xx",)), LogSeen(f"booting\n{OOM_LINE}\n"))
    assert judgement.verdict is V.OOM
    assert judgement.findings == (f"out of memory (otherwise ERROR); the server log shows: {OOM_LINE}",
                                  "1 answers were 5xx")


def test_oom_needs_a_failure_and_real_evidence():
    assert vd.judge_oom(Judgement(), LogSeen(OOM_LINE)) == Judgement()
    guess = LogSeen(GUESS, oom_false_alarms=(GUESS_PATTERN,))
    assert vd.judge_oom(Judgement(V.CRASH, ("x",)), guess).verdict is V.CRASH  # gunicorn's guess is no evidence
    assert vd.judge_oom(Judgement(V.CRASH, ("x",)), LogSeen(f"{GUESS} {OOM_LINE}", (), (GUESS_PATTERN,))).verdict \
        is V.OOM  # the guess is removed, not the line: real evidence on it still counts


def test_oom_reads_the_log_with_the_patterns_it_is_given():
    """A server's own lines come with the log, from its adapter: the rules know no server."""
    own = "[arena] gave up: 4096 bytes wanted"
    assert vd.oom_evidence(LogSeen(own)) is None
    assert vd.oom_evidence(LogSeen(f"booting\n{own}\n", oom_lines=(r"gave up: \d+ bytes wanted",))) == own
    assert vd.oom_evidence(LogSeen(GUESS)) == GUESS  # no false alarms given: the guess reads as OOM
    assert vd.oom_evidence(LogSeen(GUESS, oom_false_alarms=(GUESS_PATTERN,))) is None


def test_most_severe_orders_every_verdict():
    assert vd.most_severe([V.LOST, V.WRONG, V.ERROR, V.BOOT, V.CRASH, V.HANG]) is V.HANG
    assert vd.most_severe([V.LOST, V.WRONG]) is V.WRONG
    assert vd.most_severe([V.HANG, V.OOM]) is V.OOM
    assert vd.most_severe([V.OK, V.OK]) is V.OK
    assert Judgement(V.ERROR, ("a",)).then(Judgement(V.LOST, ("b",))) == Judgement(V.ERROR, ("a", "b"))


# --- runner and launches ---------------------------------------------------------------------


def test_a_missed_deadline_says_what_forkwise_was_doing_and_does_not_blame_the_deployment():
    judgement = vd.judge_missed_deadline(180.0, "load at concurrency 32", 151.2)
    assert judgement.verdict is not V.HANG
    check(judgement, V.BOOT, "deadline of 180 s", "in phase 'load at concurrency 32' since 151.2 s",
          "not evidence about the deployment")
    check(vd.judge_missed_deadline(180.0, "", None), V.BOOT, "never reported a phase")


def test_a_cell_that_hands_back_no_record_is_boot():
    check(vd.judge_no_record(2), V.BOOT, "exited with code 2 without a record")
    check(vd.judge_no_record(0, "unknown fields ['x']"), V.BOOT, "printed an invalid record: unknown fields")


def test_the_runner_reads_the_phase_a_cell_wrote(tmp_path):
    path = tmp_path / "phase"
    assert cell_process.read_phase(path) == ("", None)
    path.write_text("12.5\tload at concurrency 8\n")
    assert cell_process.read_phase(path) == ("load at concurrency 8", 12.5)


def test_launches_combine_to_ok_only_when_every_launch_was_ok():
    assert vd.combined_verdict([V.OK, V.OK]) is V.OK
    assert vd.combined_verdict([V.OK, V.LOST, V.HANG]) is V.LOST


# --- one place --------------------------------------------------------------------------------

PACKAGE = Path(vd.__file__).resolve().parents[1]
# A verdict returned, assigned or passed as the verdict: a decision. (Comparing with one is reading it.)
DECIDED = re.compile(r"(?:return|[^=!<>]=)\s*Verdict\.(?:OK|HANG|CRASH|BOOT|ERROR|WRONG|LOST|OOM|LEAK)\b")


def test_no_verdict_is_decided_outside_the_verdicts_module():
    sources = [p for p in PACKAGE.rglob("*.py") if "tests" not in p.parts and ".tox" not in p.parts
               and p.name != "verdicts.py"]
    decided = [f"{p.relative_to(PACKAGE)}: {line.strip()}" for p in sources
               for line in p.read_text().splitlines() if DECIDED.search(line)]
    assert decided == []


# --- a HANG's stacks -------------------------------------------------------------------------


def test_missing_py_spy_is_said_in_the_stacks_not_left_out(monkeypatch):
    from forkwise.matrix.run import stacks

    monkeypatch.setattr(stacks, "find_py_spy", lambda: None)
    assert stacks.dump_stacks(master_pid=1, budget_s=1.0) == (
        "no stacks: py-spy is not installed (pip install 'forkwise[profile]')",)


def test_a_long_dump_is_trimmed_and_says_so():
    from forkwise.matrix.run.stacks import trim

    assert trim("a\nb\nc\n", keep=3) == "a\nb\nc"
    assert trim("a\nb\nc\nd\n", keep=2) == "a\nb\n... (2 more lines)"
    assert trim("x" * 1000) == "x" * 200 + " ..."


def test_the_failing_cell_section_shows_the_stacks():
    from forkwise.matrix.publish.document import Code
    from forkwise.matrix.publish.report import failing_cell_blocks
    from forkwise.matrix.records.types import Evidence
    from test_report import record

    stack = 'worker 12:\nThread 12 (idle): "MainThread"\n    wait (threading.py:327)\n    predict (app.py:9)'
    hung = record("lazy", "uwsgi", verdict=V.HANG, evidence=Evidence(findings=("1 requests got no answer",),
                                                                     stacks=(stack,)))
    assert any(isinstance(b, Code) and "wait (threading.py:327)" in b.text for b in failing_cell_blocks(hung))


# --- a cell process that misses its deadline -------------------------------------------------

STALLED_CELL = 'printf "7.5\\tload at concurrency 8\\n" > "$FORKWISE_PHASE_FILE"; [ "$1" = once ] || exec sleep 3600'


def test_a_cell_that_misses_its_deadline_is_recorded_with_the_phase_it_was_in(monkeypatch):
    """The runner's side: a stand-in for `forkwise cell` that says its phase, then stalls. Its
    deadline: 20 times what the stand-in takes to say its phase on this host."""
    start = time.monotonic()
    subprocess.run(["sh", "-c", STALLED_CELL, "sh", "once"], env={"FORKWISE_PHASE_FILE": "/dev/null"}, check=True)
    deadline = 20 * (time.monotonic() - start)
    monkeypatch.setattr(cell_process, "cell_command", lambda *args: ["sh", "-c", STALLED_CELL, "sh"])
    cell = runner.Cell(strategy="lazy", server="gunicorn-sync", workers=2, model="default")
    profile = runner.Profile("test", "", (cell,), limits=runner.Limits(cell_deadline_s=deadline))
    record = cell_process.run_cell_process(cell, profile, Path("/nonexistent"))
    assert record.verdict is V.BOOT
    check(Judgement(record.verdict, record.evidence.findings), V.BOOT,
          "it was in phase 'load at concurrency 8' since 7.5 s", "not evidence about the deployment")
