"""The result record: one immutable, typed object per matrix cell.

Every table, CSV, JSON and HTML page is rendered from these objects. Numbers stay
numbers (seconds, milliseconds, megabytes are in the field names), verdicts are an
enum, and the JSON schema is derived from the dataclasses themselves, so the fields
are declared in exactly one place. Bump SCHEMA_VERSION whenever a field changes
incompatibly; a new field with a default (so that older records still load) keeps it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from forkwise.config import DEFAULT_DATABASE, DEFAULT_DB_RESET
from forkwise.errors import ConfigError, RecordError
from forkwise.matrix.records import rules
from forkwise.matrix.records.axes import Cell, WithAxes, axis_names
from forkwise.matrix.records.codec import decode, encode
from forkwise.matrix.records.lifecycle import BootReadiness, WindowReadiness
from forkwise.matrix.records.soak import Soak

SCHEMA_VERSION = 1
# The scenario names a record's analysis reads (the run's scenarios module owns the rest).
BAD_INPUT = "bad-input"  # its failed requests are the verification's (it has no disruption window)


class Verdict(str, enum.Enum):  # noqa: UP042  (StrEnum would change str(verdict) in reports)
    """What a cell was observed to do. Only a run decides it, never a name."""

    OK = "OK"  # every check passed
    HANG = "HANG"  # requests timed out
    CRASH = "CRASH"  # workers died or were respawned, or the server exited
    ERROR = "ERROR"  # 5xx answers
    WRONG = "WRONG"  # answers off the reference, or workers disagree
    LOST = "LOST"  # acknowledged rows missing, or rows nobody acknowledged
    BOOT = "BOOT"  # never became ready
    OOM = "OOM"  # failed, and the server log shows an out-of-memory error
    LEAK = "LEAK"  # served correctly, but memory, descriptors or connections grew with time (a soak)

    @property
    def ok(self) -> bool:
        return self is Verdict.OK


@dataclass(frozen=True)
class Latency:
    """Latency distribution of the answered requests, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


@dataclass(frozen=True)
class ErrorCounts:
    """Failed requests by kind."""

    timeout: int = 0
    connect: int = 0
    http_4xx: int = 0
    http_5xx: int = 0
    wrong: int = 0  # 200 answers whose predictions were off the reference

    @property
    def total(self) -> int:
        return self.timeout + self.connect + self.http_4xx + self.http_5xx + self.wrong


# Field metadata of a counter that adds up over a cell's launches (forkwise.matrix.analysis.launches.combine).
ADDS_UP = {"adds_up": True}


def adding_up(cls: type) -> tuple[str, ...]:
    """The fields of a record class that add up over launches."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("adds_up"))


# A level whose CPU probe ran this much slower than the run's fastest was measured while the
# host gave us less CPU than usual (an idle probe's own jitter stays under 1.15x).
HOST_SLOW_RATIO = 1.4


@dataclass(frozen=True)
class LoadLevel:
    """Closed-loop load at one concurrency, after a warm-up."""

    # Read from older records, not kept: launches were once set aside (none is since 2026-12-07).
    RETIRED_FIELDS: ClassVar[frozenset[str]] = frozenset({"launches_set_aside"})

    concurrency: int
    duration_s: float = field(metadata=ADDS_UP)
    requests: int = field(metadata=ADDS_UP)  # answered 200
    rps: float  # mean of rps_samples
    rps_stdev: float  # spread of rps_samples: what a comparison treats as noise
    rps_samples: tuple[float, ...]  # one per interval
    latency: Latency
    errors: ErrorCounts
    rows_expected: int = field(metadata=ADDS_UP)  # rows acknowledged by 200 answers during this level
    rows_found: int = field(metadata=ADDS_UP)  # rows the database holds for this level
    unacknowledged: int = field(metadata=ADDS_UP)  # requests whose answer the driver never read (cut off, timed out)
    sampled: int = field(metadata=ADDS_UP)  # answers (builtin) or rows (wrk) under load checked against the reference
    sampled_wrong: int = field(metadata=ADDS_UP)
    driver: str  # "wrk" or "builtin"
    driver_cpu_s: float = field(metadata=ADDS_UP)  # CPU the load generator itself used (it shares the cores)
    server_cpu_s: float = field(metadata=ADDS_UP)  # CPU every server process used during the level
    # A record that combines several launches of the cell (forkwise.matrix.analysis.launches): the mean
    # rps of each launch its throughput comes from, in launch order. Empty for a single launch.
    launch_rps: tuple[float, ...] = ()
    # How much slower the host's CPU probe (forkwise.matrix.run.stability) ran around this level
    # than the run's reference: the larger of before and after; 0 when not probed. Past
    # HOST_SLOW_RATIO the level was measured in a slow spell of the host.
    host_slowdown: float = 0.0
    # Combined records: launches that ran this level in a slow spell of the host. They count like
    # every launch (none is set aside: dropping them would lower the noise the run reports).
    launches_slow: int = 0
    # The longest stretch of the level in which the deployment used no CPU (matrix.progress; the
    # longest of every launch), and the stretch that shows it blocked (the cell's request
    # timeout): a request that timed out is a HANG only on that evidence. None: not watched.
    longest_idle_s: float | None = None
    blocked_after_s: float | None = None
    # The longest stretch in which one worker used no CPU while no model server computed either
    # (matrix.run.progress): a worker blocked while the others served. None: not watched.
    longest_worker_stall_s: float | None = None

    @property
    def host_slow(self) -> bool:
        return self.host_slowdown > HOST_SLOW_RATIO

    @property
    def rows_lost(self) -> int:
        """Acknowledged rows the database does not hold."""
        return max(0, self.rows_expected - self.rows_found)

    @property
    def rows_unexplained(self) -> int:
        """Rows beyond what acknowledged and unanswered requests can account for."""
        return max(0, self.rows_found - self.rows_expected - self.unacknowledged)


@dataclass(frozen=True)
class RateLevel:
    """Open-loop load at one offered rate (Poisson arrivals, forkwise.matrix.run.open_loop): latency
    counts from each request's intended start, so a stall of the server shows in it."""

    rate_rps: float  # offered
    duration_s: float
    sent: int  # requests due in the measured window
    requests: int  # answered 200
    rps: float  # answered 200 a second
    latency: Latency  # of the 200s, from each intended start
    p99_all_ms: float | None  # p99 of every request due, a failed one over any budget; None: > 1% failed
    errors: ErrorCounts
    lag_p99_ms: float  # how late the driver itself sent, at p99 (past its limit the rate says nothing)
    max_in_flight: int  # connections the driver had open at once, at most
    within_budget: bool  # p99_all_ms within the run's p99 budget, the driver on schedule
    rows_expected: int  # rows acknowledged by 200 answers during the level, warm-up included
    rows_found: int
    unacknowledged: int
    driver_cpu_s: float
    server_cpu_s: float


@dataclass(frozen=True)
class OpenLoop:
    """The highest rate a cell carries within a p99 budget, and every rate tried to find it."""

    p99_budget_ms: float  # the run's budget (the profile's [recommend] p99_ms)
    levels: tuple[RateLevel, ...]  # in the order they ran
    max_rate_rps: float | None  # the highest offered rate within the budget; None: no rate was


@dataclass(frozen=True)
class Disruption:
    """A reliability scenario under load: what the event cost and whether the cell recovered."""

    event: str  # what was done, e.g. "SIGKILL worker 1234" ("" when the scenario has no single event)
    at_s: float | None  # when, in seconds into the measured window
    ok: int  # 200 answers, warm-up included
    answers_wrong: int
    failed: ErrorCounts  # failed requests by kind (503s included in http_5xx)
    http_503: int  # of http_5xx: "retry later" answers (model server down, database busy)
    unacknowledged: int  # requests whose answer never came back (killed mid-request, cut off at the end)
    recovery_s: float | None  # event to the first interval back at 80% of the rate before it
    recovered: bool
    rps_samples: tuple[float, ...]
    interval_s: float
    workers_answering: tuple[int, ...]  # every worker pid that answered during the scenario
    # The longest stretch without a single 200 (a stall at the end: until it ended).
    longest_stall_s: float | None = None
    recovery_allowance_s: float | None = None  # the time the cell had to recover: from its own cold start
    # The longest stretch of the window in which the deployment used no CPU (matrix.progress), and
    # the stretch that shows it blocked (the cell's request timeout); None: progress not watched.
    longest_idle_s: float | None = None
    blocked_after_s: float | None = None
    # The longest stretch in which one worker used no CPU while no model server computed either
    # (matrix.run.progress): a worker blocked while the others served. None: not watched.
    longest_worker_stall_s: float | None = None
    # Per interval of rps_samples: the share of the machine's cores the rest of the machine (a neighbour,
    # the hypervisor) left to the deployment and its load; recovery is judged on the rates divided by it
    # (matrix.run.scenarios.host_adjusted). Empty: not measured (records before 2026-12-07).
    host_shares: tuple[float, ...] = ()
    readiness: WindowReadiness | None = None  # None: not polled (records before 2026-12-07)


@dataclass(frozen=True)
class ModelServerStats:
    """What the deployment's model-server processes did over the whole cell (verification, warm-up
    and every load level), added up over all of them (forkwise.modelserver.stats)."""

    calls: int = field(metadata=ADDS_UP)  # model calls, each answering one or more requests (a batch)
    rows: int = field(metadata=ADDS_UP)
    requests: int = field(metadata=ADDS_UP)
    direct: int = field(metadata=ADDS_UP)  # calls run at once on the request's thread (the model was idle)
    padding_rows: int = field(metadata=ADDS_UP)  # zero rows added to reach an allowed batch size
    expired: int = field(metadata=ADDS_UP)  # requests failed unanswered: they waited past the deadline
    largest_call: int  # rows of the largest call
    calls_by_rows: tuple[int, ...]  # calls per power-of-two bucket of rows: [1], [2-3], [4-7], ...
    queue_wait_mean_ms: float | None  # None: no request waited
    queue_wait_p50_ms: float | None  # a log bucket's ceiling: at most 19% above the true percentile
    queue_wait_p99_ms: float | None
    processes: int = field(metadata=ADDS_UP)  # model-server processes that reported (several: restarts)

    @property
    def rows_per_call(self) -> float | None:
        return self.rows / self.calls if self.calls else None


@dataclass(frozen=True)
class ProcessMemory:
    """One process of the deployment, measured with psutil."""

    role: str  # master | worker | model-server | supervisor | helper (a program a process ran)
    pid: int
    rss_mb: float
    uss_mb: float
    pss_mb: float
    cpu_s: float
    gpu_mb: float | None = None  # GPU memory the process holds (NVML); None on a host without a GPU


@dataclass(frozen=True)
class Memory:
    processes: tuple[ProcessMemory, ...]
    total_rss_mb: float
    total_uss_mb: float
    total_pss_mb: float
    total_gpu_mb: float | None = None  # None when no process's GPU memory could be read

    @classmethod
    def of(cls, processes: Iterable[ProcessMemory]) -> Memory:
        procs = tuple(processes)
        gpu = [p.gpu_mb for p in procs if p.gpu_mb is not None]
        return cls(
            processes=procs,
            total_rss_mb=round(sum(p.rss_mb for p in procs), 1),
            total_uss_mb=round(sum(p.uss_mb for p in procs), 1),
            total_pss_mb=round(sum(p.pss_mb for p in procs), 1),
            total_gpu_mb=round(sum(gpu), 1) if gpu else None,
        )


@dataclass(frozen=True)
class Evidence:
    """Why a verdict is what it is: short findings, timings, the server log's telling lines
    (errors, signals, timeouts: found anywhere in the log) and its tail."""

    findings: tuple[str, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)
    log_tail: str = ""
    log_highlights: tuple[str, ...] = ()
    # A HANG: where each worker and model-server process was stuck (py-spy dump, native frames
    # where it can read them), or why there are no stacks.
    stacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Environment:
    """Where and with what the record was measured."""

    date: str
    git_commit: str
    cpu_model: str
    cores: int
    memory_gb: float
    python: str
    platform: str
    packages: dict[str, str]
    gpu_name: str = ""  # the first GPU's name, "" without a GPU
    gpu_driver: str = ""
    gpu_memory_mb: float = 0.0  # the first GPU's memory (MiB), 0 without a GPU
    # The user's name for the host (FORKWISE_HOST_LABEL, `forkwise matrix --host-label`), else its
    # hostname; "" in records made before it existed. With the hardware above, it is the host axis
    # of a merged report (forkwise.matrix.run.merge).
    host_label: str = ""


def database_label(database: str, db_reset: str, db_in_master: bool) -> str:
    """A cell's database settings as a report names them; "" for SQLite with the defaults."""
    if database == DEFAULT_DATABASE and db_reset == DEFAULT_DB_RESET and not db_in_master:
        return ""
    parts = [database]
    if db_reset != DEFAULT_DB_RESET:
        parts.append(f"reset {db_reset}")
    if db_in_master:
        parts.append("queried in the master")
    return ", ".join(parts)


@dataclass(frozen=True)
class CellRecord(WithAxes):
    """One strategy x server x workers x model x device x backend cell, as observed by one run."""

    cell: Cell  # the cell's axes (matrix.records.axes): in JSON, one top-level field each
    threads: int  # the server setting's threads per worker
    verdict: Verdict
    cold_start_s: float | None  # launch to first correct answer
    warm_all_s: float | None  # launch to every worker having answered correctly
    requests: int = field(metadata=ADDS_UP)  # verification requests sent
    ok: int = field(metadata=ADDS_UP)  # verification requests answered 200 and correct
    errors: ErrorCounts  # verification failures by kind
    rows_expected: int = field(metadata=ADDS_UP)  # rows acknowledged (verification, and a scenario's load)
    rows_found: int = field(metadata=ADDS_UP)  # of those, found in the database with the same output
    worker_pids: tuple[int, ...]  # the workers that answered
    evidence: Evidence
    environment: Environment
    started_at: str
    duration_s: float = field(metadata=ADDS_UP)
    settings: dict[str, Any] = field(default_factory=dict)  # strategy/server knobs in force
    load: tuple[LoadLevel, ...] = ()
    memory: Memory | None = None
    disruption: Disruption | None = None
    launches: int = 1  # separate launches of the cell whose measurements this record combines
    # The app's connections to its PostgreSQL server at their peak (pg_stat_activity, sampled
    # through the cell): workers x pool size, and the master's. None for SQLite.
    db_connections_peak: int | None = None
    # The PostgreSQL server's log lines about broken sessions (TLS errors, protocol errors, cut
    # sessions) while the cell ran, each once: seen even when no client got an error.
    db_server_log: tuple[str, ...] = ()
    open_loop: OpenLoop | None = None  # the open-loop phase (a profile's [load] mode = "open")
    soak: Soak | None = None  # the soak scenario: every interval's processes, and the growth fitted
    # The date of the verdict rules that judged this record (matrix.records.rules); "" in records
    # made before records said: ``rules`` then infers it from what the record observed.
    judged_by: str = ""
    model_server: ModelServerStats | None = None  # None: no model server, or it reported nothing
    readiness: BootReadiness | None = None  # /readyz at boot; None: not polled (records before 2026-12-07)
    schema_version: int = SCHEMA_VERSION

    @property
    def cell_id(self) -> str:
        """Stable identity of the cell: what ``--resume`` and ``compare`` match on."""
        return self.cell.id

    @property
    def rules(self) -> str:
        """The date of the verdict rules this record was judged by (matrix.records.rules)."""
        watched = [x for x in (*self.load, self.disruption) if x is not None]
        return rules.inferred(self.judged_by, self.environment.date[:10],
                              any(x.longest_idle_s is not None for x in watched))

    @property
    def database_setting(self) -> str:
        """The database settings that set this cell apart ("" for SQLite with the defaults)."""
        return database_label(self.database, self.db_reset, self.db_in_master)

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: encode(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "cell"}
        return {**self.cell.to_dict(), **fields}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRecord:
        if not isinstance(data, dict):
            raise RecordError("a record must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(f"record schema_version {version!r}; this forkwise reads {SCHEMA_VERSION}")
        names = axis_names()
        try:  # a record made before an axis existed has none: its default
            cell = Cell(**{k: v for k, v in data.items() if k in names})
        except ConfigError as exc:
            raise RecordError(f"record: {exc}") from None
        return decode(cls, {k: v for k, v in data.items() if k not in names}, "record", {"cell": cell})
