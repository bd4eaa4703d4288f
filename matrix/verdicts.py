"""Every verdict rule, in one place: observations in, a verdict and its findings out.

Pure: no I/O, no processes, no clock. The cell process (``forkwise cell``) observes a deployment
and hands what it saw to these functions; the matrix runner and ``launches.combine`` ask them
too. A rule reads facts only (what requests got, which workers lived, which rows the database
holds, what the server log says), never a strategy's name, so a team's own strategy is judged
exactly like a built-in one.

Severity, most severe first: HANG, CRASH, BOOT, ERROR, WRONG, LOST, LEAK. When several rules
fire, the most severe one is the verdict and every fired rule's finding is kept. OOM overrides any
failure when the server log shows an out-of-memory error.

A request with no answer is a HANG on evidence: the deployment, or one worker, made no CPU
progress while it waited. A change to a rule is dated in ``records.rules``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from forkwise.matrix.records.observations import (
    Answers,
    BadInputSeen,
    DisruptionSeen,
    RowsSeen,
    VerificationSeen,
    Workers,
)
from forkwise.matrix.records.server_log import LogSeen, oom_evidence
from forkwise.matrix.records.soak import Soak, leaks
from forkwise.matrix.records.types import BootReadiness, Disruption, LoadLevel, Verdict, WindowReadiness

SEVERITY: tuple[Verdict, ...] = (Verdict.HANG, Verdict.CRASH, Verdict.BOOT, Verdict.ERROR, Verdict.WRONG,
                                 Verdict.LOST, Verdict.LEAK)
MIN_WORKERS_ANSWERING = 2  # answers must come from at least this many workers (or all, if fewer)
CONNECT_FAILURES_TOLERATED = 0.01  # under load: refused or reset connections, as a share of requests


@dataclass(frozen=True)
class Judgement:
    """A verdict and the findings that say why (notes first, then each fired rule's finding)."""

    verdict: Verdict = Verdict.OK
    findings: tuple[str, ...] = ()

    @classmethod
    def of(cls, failures: Iterable[tuple[Verdict, str]], notes: Iterable[str] = ()) -> Judgement:
        """The most severe of the fired rules (`failures`), with all their findings."""
        fired = sorted(failures, key=lambda f: SEVERITY.index(f[0]))
        verdict = fired[0][0] if fired else Verdict.OK
        return cls(verdict, (*notes, *(text for _, text in fired)))

    @property
    def hung(self) -> bool:
        """A HANG: the workers' stacks are worth reading before the deployment is stopped."""
        return self.verdict is Verdict.HANG

    def then(self, other: Judgement) -> Judgement:
        """Two phases of one cell: the more severe verdict, the findings of both in order."""
        return Judgement(most_severe((self.verdict, other.verdict)), self.findings + other.findings)


def _fired(judgement: Judgement) -> list[tuple[Verdict, str]]:
    """A failing judgement's findings as fired rules, to weigh with others."""
    return [] if judgement.verdict.ok else [(judgement.verdict, text) for text in judgement.findings]


def most_severe(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict of several (OOM above all), OK when every one is OK."""
    failed = [v for v in verdicts if not v.ok]
    if Verdict.OOM in failed:
        return Verdict.OOM
    return min(failed, key=SEVERITY.index) if failed else Verdict.OK


# --- verification, rows, load, disruption, bad input ---------------------------------------


def _timeouts(answers: Answers, answered_once: bool, where: str, patience_s: float) -> list[tuple[Verdict, str]]:
    """No answer: a HANG on evidence of no progress (or when progress was not watched); a request
    still computing at the boot deadline before anything answered is a deployment never ready."""
    failures = []
    if answers.stalled:
        failures.append((Verdict.HANG, f"{answers.stalled} requests got no answer {where} while the deployment "
                                       f"made no CPU progress: blocked, not computing"))
    if answers.unwatched:
        failures.append((Verdict.HANG, f"{answers.unwatched} requests timed out {where}"))
    if answers.busy and not answered_once:
        failures.append((Verdict.BOOT, "the first request was still being computed at the boot deadline: "
                                       "the deployment never became ready"))
    elif answers.busy:
        failures.append((Verdict.HANG, f"{answers.busy} requests got no answer {where} within the cell's patience "
                                       f"({patience_s:.1f} s) although the deployment kept computing"))
    return failures


def judge_workers(workers: Workers) -> Judgement:
    """Workers died or were respawned: CRASH."""
    if not workers.died:
        return Judgement()
    return Judgement.of([(Verdict.CRASH, f"workers died or were respawned: {len(workers.seen)} worker pids seen "
                                         f"for {workers.configured} workers, vanished {list(workers.vanished[:8])}")])


def judge_verification(seen: VerificationSeen) -> Judgement:
    """Readiness, the first answer and verification -> verdict."""
    if not seen.healthy:
        return Judgement.of([(Verdict.BOOT, "the deployment never answered /healthz")])
    a, answered = seen.answers, seen.first == "ok"
    failures = _fired(judge_workers(seen.workers))
    failures += _timeouts(a, answered, "during verification", seen.patience_s)
    if not seen.server_alive:
        failures.append((Verdict.CRASH, "the server exited during verification"))
    if not answered and not (a.timeout or a.http_5xx or a.wrong):
        failures.append((Verdict.BOOT, f"no correct answer before the boot deadline (the first request ended "
                                       f"as {seen.first!r})"))
    if a.http_5xx:
        failures.append((Verdict.ERROR, f"{a.http_5xx} verification answers were 5xx"))
    if a.wrong:
        failures.append((Verdict.WRONG, f"{a.wrong} verification answers were off the reference"))
    if a.connect or a.http_4xx:
        failures.append((Verdict.WRONG, f"verification got {a.connect} failed connections and {a.http_4xx} 4xx "
                                        f"answers to valid requests"))
    wanted = min(seen.workers.configured, MIN_WORKERS_ANSWERING)
    if answered and seen.workers_answered < wanted:
        failures.append((Verdict.WRONG, f"only {seen.workers_answered} of {seen.workers.configured} workers "
                                        f"answered {a.total} requests"))
    return Judgement.of(failures)


def judge_rows(rows: RowsSeen) -> Judgement:
    """Acknowledged rows missing or changed, or rows nobody acknowledged: LOST."""
    failures = []
    if rows.missing:
        failures.append((Verdict.LOST, f"{len(rows.missing)} acknowledged rows are missing, "
                                       f"e.g. ids {list(rows.missing[:5])}"))
    if rows.differing:
        failures.append((Verdict.LOST, f"{len(rows.differing)} rows hold other outputs than their answers, "
                                       f"e.g. ids {list(rows.differing[:5])}"))
    if not 0 <= rows.extra <= rows.slack:
        failures.append((Verdict.LOST, f"the table holds {rows.total} rows for {rows.acknowledged} acknowledged "
                                       f"({rows.slack} requests unanswered)"))
    return Judgement.of(failures)


def _level_failures(level: LoadLevel) -> tuple[list[tuple[Verdict, str]], list[str]]:
    e, tag = level.errors, f"under load at concurrency {level.concurrency}"
    failures, notes = [], []
    if e.timeout:
        failures.append(_unanswered(e.timeout, tag, level))
    if e.http_5xx:
        failures.append((Verdict.ERROR, f"{e.http_5xx} answers were 5xx {tag}"))
    if level.sampled_wrong:
        failures.append((Verdict.WRONG, f"{level.sampled_wrong} of {level.sampled} sampled answers were off {tag}"))
    rows = (f"{level.rows_expected} rows acknowledged, {level.rows_found} written, "
            f"{level.unacknowledged} requests unanswered {tag}")
    if level.rows_lost:
        failures.append((Verdict.LOST, rows))
    elif level.rows_unexplained:
        # The built-in driver accounts for every request; wrk's count of requests cut off at the
        # end of a run is approximate, so surplus rows under wrk are only noted.
        if level.driver == "builtin":
            failures.append((Verdict.LOST, rows))
        else:
            notes.append(rows + " (wrk: noted, not judged)")
    if e.connect > CONNECT_FAILURES_TOLERATED * max(1, level.requests):
        failures.append((Verdict.ERROR, f"{e.connect} connections failed {tag}"))
    return failures, notes


def judge_load(levels: Sequence[LoadLevel], workers: Workers) -> Judgement:
    """Every load level, and the workers over the whole load -> verdict."""
    failures: list[tuple[Verdict, str]] = []
    notes: list[str] = []
    for level in levels:
        more, noted = _level_failures(level)
        failures += more
        notes += noted
    failures += _fired(judge_workers(workers))
    return Judgement.of(failures, notes)


def _unanswered(count: int, where: str, watched: LoadLevel | Disruption | Soak) -> tuple[Verdict, str]:
    """Requests the load driver gave up on (after the cell's patience): a HANG only on evidence that
    the deployment, or one worker, stood blocked (no CPU progress for a request timeout); else they
    were starved or dropped while it computed: an ERROR, not a hang."""
    lost = f"{count} requests got no answer within the cell's patience {where}"
    idle_s, blocked_after_s, stall_s = watched.longest_idle_s, watched.blocked_after_s, watched.longest_worker_stall_s
    if idle_s is None or blocked_after_s is None:
        return Verdict.HANG, f"{lost} (progress not watched)"
    if idle_s >= blocked_after_s:
        return Verdict.HANG, f"{lost}; the deployment made no CPU progress for {idle_s:.1f} s: blocked, not computing"
    if (stall_s or 0.0) >= blocked_after_s:
        return Verdict.HANG, f"{lost}; a worker made no CPU progress for {stall_s:.1f} s while others computed: blocked"
    return Verdict.ERROR, (f"{lost}, although the deployment and every worker kept computing (none stood idle for "
                           f"{blocked_after_s:.1f} s; longest {idle_s:.1f} s): requests starved or dropped, not a hang")


def judge_disruption(seen: DisruptionSeen) -> Judgement:
    """A disruption's facts -> verdict. Failed requests are measured, not failures in themselves;
    hangs, 500s, wrong answers and no recovery are."""
    dis, name = seen.disruption, seen.scenario
    notes = [f"event at {dis.at_s} s: {dis.event}"] if dis.event else []
    failures: list[tuple[Verdict, str]] = []
    if dis.failed.timeout:
        failures.append(_unanswered(dis.failed.timeout, f"during {name}", dis))
    other_5xx = dis.failed.http_5xx - dis.http_503
    if other_5xx:
        failures.append((Verdict.ERROR, f"{other_5xx} answers were 5xx other than 503 during {name}"))
    if dis.answers_wrong:
        failures.append((Verdict.WRONG, f"{dis.answers_wrong} answers were off the reference during {name}"))
    if not dis.recovered:
        what = "after the event" if dis.event else "by the end of the window"
        failures.append((Verdict.CRASH, f"throughput did not recover {what} ({name})"))
    if seen.disrupts_workers:
        fresh = set(dis.workers_answering) - set(seen.workers.first)
        if seen.has_event and not fresh:
            failures.append((Verdict.CRASH, "no replacement worker answered after the disruption"))
    else:
        failures += _fired(judge_workers(seen.workers))
    return Judgement.of(failures, notes)


def judge_bad_input(seen: BadInputSeen) -> Judgement:
    """The bad-input campaign, then verification again: still correct?"""
    c, a = seen.campaign, seen.after
    failures: list[tuple[Verdict, str]] = []
    if c.timeout:
        failures.append((Verdict.HANG, f"{c.timeout} malformed requests got no answer"))
    failures += _timeouts(a, True, "in the verification after bad input", 0.0)
    if c.http_5xx or c.connect:
        failures.append((Verdict.ERROR, f"bad input got {c.http_5xx} 5xx and {c.connect} failed connections"))
    if a.http_5xx:
        failures.append((Verdict.ERROR, f"{a.http_5xx} verification answers after bad input were 5xx"))
    if a.wrong:
        failures.append((Verdict.WRONG, f"{a.wrong} verification answers were off the reference"))
    if not seen.verified_after:
        failures.append((Verdict.WRONG, "no verification request was sent after the bad input"))
    return Judgement.of(failures)


# --- readiness ------------------------------------------------------------------------------


def judge_readiness(boot: BootReadiness | None, window: WindowReadiness | None, resolution_s: float,
                    allowance_s: float) -> Judgement:
    """/readyz against what the deployment answered (matrix.run.readiness). An ERROR when, at boot,
    it said ready longer than the probes can resolve (`resolution_s`) before a request sent then was
    answered, or answered longer than the cell's recovery allowance before it said ready; or when, in
    a disruption's window, it said the opposite of what the deployment answered for longer than that
    allowance (3 of its own cold starts and a second): an orchestrator would have routed traffic to a
    broken deployment, or held it from a working one, for longer than a recovery takes."""
    failures = []
    if boot is not None and boot.ready_early_s > resolution_s:
        failures.append((Verdict.ERROR, f"/readyz said ready {boot.ready_early_s:.2f} s before a request was answered "
                                        f"correctly (the probes resolve {resolution_s:.2f} s)"))
    if boot is not None and boot.ready_late_s > allowance_s:
        failures.append((Verdict.ERROR, f"the deployment answered correctly {boot.ready_late_s:.1f} s before /readyz "
                                        f"said ready (allowed: {allowance_s:.1f} s)"))
    if window is not None and window.longest_lie_s > allowance_s:
        failures.append((Verdict.ERROR, f"/readyz said the opposite of what the deployment answered for "
                                        f"{window.longest_lie_s:.1f} s in a row during the scenario (ready while "
                                        f"failing {window.ready_while_failing_s:.1f} s, not ready while serving "
                                        f"{window.not_ready_while_serving_s:.1f} s; allowed: {allowance_s:.1f} s)"))
    return Judgement.of(failures)


def judge_soak(soak: Soak) -> Judgement:
    """A soak (records.soak): a growth beyond its bound is a LEAK (it served correctly, but would not
    for long); unanswered requests, failed answers and connections, and the rows, as under load."""
    failures = [(Verdict.LEAK, text) for text in leaks(soak)]
    if soak.failures("timeout"):
        failures.append(_unanswered(soak.failures("timeout"), "during the soak", soak))
    if soak.failures("http_5xx") or soak.failures("http_4xx"):
        failures.append((Verdict.ERROR, f"{soak.failures('http_5xx')} answers were 5xx and "
                                        f"{soak.failures('http_4xx')} 4xx during the soak"))
    if soak.failures("connect") > CONNECT_FAILURES_TOLERATED * max(1, soak.requests):
        failures.append((Verdict.ERROR, f"{soak.failures('connect')} connections failed during the soak"))
    if not 0 <= soak.rows_found - soak.rows_expected <= soak.unacknowledged:
        failures.append((Verdict.LOST, f"the soak's 200s wrote {soak.rows_expected} rows, the table gained "
                                       f"{soak.rows_found} ({soak.unacknowledged} requests unanswered)"))
    return Judgement.of(failures)


# --- out of memory (the log read in records.server_log) --------------------------------------


def judge_oom(judgement: Judgement, log: LogSeen) -> Judgement:
    """A failure whose server log shows an out-of-memory error is OOM; success stays success."""
    if judgement.verdict.ok:
        return judgement
    line = oom_evidence(log)
    if line is None:
        return judgement
    why = f"out of memory (otherwise {judgement.verdict.value}); the server log shows: {line}"
    return Judgement(Verdict.OOM, (why, *judgement.findings))


# --- the matrix runner and combined launches -------------------------------------------------


def judge_missed_deadline(deadline_s: float, phase: str, phase_at_s: float | None) -> Judgement:
    """The cell process did not finish within its deadline. Every wait on the deployment inside it
    is bounded, and a hung deployment is judged there on evidence; so a missed deadline says that
    forkwise itself stalled (its load driver, profiler, quiet gate, or a stop), not the deployment.
    BOOT, in its meaning 'the cell itself failed to produce a record', with what it was doing."""
    if phase:
        where = f"it was in phase '{phase}'" + (f" since {phase_at_s:.1f} s" if phase_at_s is not None else "")
    else:
        where = "it never reported a phase (it stalled before launching the deployment)"
    return Judgement.of([(Verdict.BOOT, f"forkwise cell did not finish within its deadline of {deadline_s:g} s: "
                                        f"{where}; a stall of forkwise, not evidence about the deployment")])


def judge_no_record(exit_code: int | None, problem: str = "") -> Judgement:
    """The cell process ended without a (valid) record: the cell itself failed (BOOT)."""
    why = f"forkwise cell printed an invalid record: {problem}" if problem else \
        f"forkwise cell exited with code {exit_code} without a record"
    return Judgement.of([(Verdict.BOOT, why)])


def combined_verdict(launches: Sequence[Verdict]) -> Verdict:
    """A cell measured in several launches: OK only if every launch was, else the first failure."""
    return next((v for v in launches if not v.ok), Verdict.OK)
