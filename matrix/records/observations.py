"""What the cell process observed, as the verdict rules (``matrix.verdicts``) take it: plain
facts about requests, workers, rows, a disruption, the bad-input campaign and the server log."""

from __future__ import annotations

from dataclasses import dataclass

from forkwise.matrix.records.types import Disruption, ErrorCounts


@dataclass(frozen=True)
class Answers:
    """What a phase's requests got, by kind. A timeout is a request given up on without an
    answer; the cell says why when it watched the deployment's CPU time while waiting."""

    ok: int = 0
    wrong: int = 0  # 200 answers off the reference
    timeout: int = 0
    stalled: int = 0  # of timeout: given up on because the deployment made no CPU progress
    busy: int = 0  # of timeout: given up on at a ceiling while the deployment kept computing
    connect: int = 0  # refused or reset connections
    http_4xx: int = 0
    http_5xx: int = 0  # 503 included

    @property
    def total(self) -> int:
        return self.ok + self.wrong + self.timeout + self.connect + self.http_4xx + self.http_5xx

    @property
    def unwatched(self) -> int:
        """Timeouts given up on without watching the deployment's progress."""
        return max(0, self.timeout - self.stalled - self.busy)


@dataclass(frozen=True)
class Workers:
    """The web workers as the cell's watch saw them (forkwise.matrix.run.resources.WorkerWatch)."""

    configured: int
    seen: tuple[int, ...] = ()  # every worker pid ever seen, in order of appearance
    vanished: tuple[int, ...] = ()  # pids that disappeared while the master lived

    @property
    def died(self) -> bool:
        return bool(self.vanished) or len(self.seen) > self.configured

    @property
    def first(self) -> tuple[int, ...]:
        """The workers the deployment started with."""
        return self.seen[: self.configured]


@dataclass(frozen=True)
class VerificationSeen:
    """What verification saw: readiness, the first answer, every verification reply."""

    healthy: bool  # /healthz answered before the boot deadline
    first: str  # how the first-answer phase ended: "ok", or the reply kind that stopped it
    answers: Answers
    workers_answered: int  # distinct workers that answered correctly
    workers: Workers
    server_alive: bool  # the server process still ran when verification ended
    patience_s: float = 0.0  # how long a request was waited for once the cell answered


@dataclass(frozen=True)
class RowsSeen:
    """The database against the answers: acknowledged rows must exist with the same outputs,
    and no other row may exist beyond `slack` (requests whose answers never came back)."""

    acknowledged: int
    missing: tuple[int, ...] = ()  # acknowledged ids the table lacks
    differing: tuple[int, ...] = ()  # acknowledged ids stored with another output
    total: int = 0  # rows the table holds
    slack: int = 0

    @property
    def intact(self) -> int:
        return self.acknowledged - len(self.missing) - len(self.differing)

    @property
    def extra(self) -> int:
        return self.total - self.acknowledged


@dataclass(frozen=True)
class DisruptionSeen:
    """A reliability scenario under load (forkwise.matrix.run.scenarios) and the workers around it."""

    scenario: str
    has_event: bool  # one event (a kill, a reload) part-way through, not a whole-window condition
    disrupts_workers: bool  # worker deaths are the scenario itself, not a crash
    disruption: Disruption
    workers: Workers


@dataclass(frozen=True)
class BadInputSeen:
    """The bad-input campaign and the verification after it."""

    campaign: ErrorCounts  # malformed payloads that got no clean 4xx: timeouts, failed connections, 5xx
    after: Answers  # verification replies, counted over the whole cell
    verified_after: int  # verification requests sent after the campaign
