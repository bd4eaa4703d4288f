"""Run a matrix profile: every cell in its own process, one record each, written at once.

Runs in the process of ``forkwise matrix``. Each cell is a ``forkwise cell`` child in
its own session, with a hard deadline; it reads its plan from a JSON file (matrix.plan.CellPlan)
and hands back one JSON record in another (--record-out), whatever it logs on stdout. A failing,
crashing or hanging cell never stops the run and leaves nothing behind. Records are appended as each cell ends, so ``--resume`` continues an
interrupted run. On a host without a GPU, device=gpu cells are skipped with the reason
printed, and no record is written for them; so are the PostgreSQL cells on a host without PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path

from forkwise import gpu, postgres, servers
from forkwise.config import DATABASES, DB_RESET_POLICIES, DEFAULT_DATABASE, DEFAULT_DB_RESET, THREAD_LABELS
from forkwise.errors import ConfigError, RecordError
from forkwise.matrix import environment, stability
from forkwise.matrix import verdicts
from forkwise.matrix.cell import PATIENCE_COLD_STARTS, PHASE_FILE_VAR, summary_line
from forkwise.matrix.launches import pass_order
from forkwise.matrix.open_loop import OpenLoopPlan
from forkwise.matrix.plan import PER_CELL_QUIET_BUDGET_S, CellPlan, check_setting, default_of
from forkwise.matrix.recommend import Budgets
from forkwise.matrix.scenarios import SCENARIOS, recovery_allowance_s, window_s
from forkwise.matrix.shards import WHOLE, Shard, shard_cells
from forkwise.matrix.records import (
    RECORDS_FILE, SCHEMA_VERSION, CellRecord, ErrorCounts, Evidence, append_record, cell_id, read_records,
)
from forkwise.model.spec import BUILTIN_MODELS, ensure_spec
from forkwise.procs import stop_process, tagged_processes
from forkwise.strategies import registry

AXES = ("strategy", "server", "workers", "model", "device", "backend", "scenario", "database", "db_reset",
        "db_in_master", "threads")
MATRIX_TAG_VAR = "FORKWISE_MATRIX_TAG"
DEVICES = gpu.DEVICES
AXIS_DEFAULTS = {"device": ["cpu"], "backend": [gpu.DEFAULT_BACKEND], "scenario": ["steady"],
                 "database": [DEFAULT_DATABASE], "db_reset": [DEFAULT_DB_RESET], "db_in_master": [False],
                 "threads": ["default"]}


@dataclass(frozen=True)
class Cell:
    strategy: str
    server: str
    workers: int
    model: str
    device: str = "cpu"
    scenario: str = "steady"
    backend: str = gpu.DEFAULT_BACKEND
    database: str = DEFAULT_DATABASE
    db_reset: str = DEFAULT_DB_RESET
    db_in_master: bool = False
    threads: str = "default"  # the runtime's intra-op threads per process (config.THREAD_LABELS or a number)

    @property
    def id(self) -> str:
        return cell_id(self.strategy, self.server, self.workers, self.model, self.device, self.scenario, self.backend,
                       self.database, self.db_reset, self.db_in_master, self.threads)


@dataclass(frozen=True)
class LoadSettings:
    """How each steady cell is loaded. With wrk, intervals last whole seconds (duration_s / intervals,
    rounded, at least 1), and a warm-up of more than 0 s lasts at least 1 s."""

    # The profile's own choice (a cell's plan has none: it only verifies unless given levels).
    levels: tuple[int, ...] = (1, 8, 32)
    # Each launch: load at the highest level before the first measured level. The defaults of the
    # settings a cell has too are its plan's (forkwise.matrix.plan), declared there once.
    warmup_s: float = default_of("warmup_s")
    duration_s: float = default_of("duration_s")  # measured seconds per level, per launch
    intervals: int = default_of("intervals")  # rps samples per level, per launch
    # Launches per steady cell, in separate passes over the matrix, one pass apart;
    # a level's spread covers every launch (see forkwise.matrix.launches).
    repeats: int = 1
    # More passes after those, measuring the highest level only (the level compare tests each
    # strategy at): more launches where the power matters, without booting for the other levels.
    top_level_repeats: int = 0
    scenario_duration_s: float = default_of("scenario_duration_s")  # reliability scenarios: around the event
    # Seconds the whole run may spend waiting for the host to leave a slow spell before a level
    # (forkwise.matrix.stability); at most 1.5 s a level. 0: never wait, only record.
    quiet_budget_s: float = 60.0
    # "open": after the levels, each steady cell's highest rate (Poisson arrivals) whose p99 is within
    # the profile's [recommend] p99_ms (forkwise.matrix.open_loop): these rates, or a search of rate_steps.
    mode: str = "closed"
    rates: tuple[float, ...] = default_of("rates")
    rate_steps: int = default_of("rate_steps")

    def __post_init__(self) -> None:
        if self.mode not in LOAD_MODES:
            raise ConfigError(f"load.mode must be one of {', '.join(LOAD_MODES)}; got {self.mode!r}")
        # The settings a cell's plan has too: checked by the plan's own checks.
        for name, plan_name in (("levels", "load_levels"), ("warmup_s", "warmup_s"), ("duration_s", "duration_s"),
                                ("intervals", "intervals"), ("scenario_duration_s", "scenario_duration_s"),
                                ("rates", "rates")):
            check_setting(plan_name, getattr(self, name), f"load.{name}")
        if not isinstance(self.rate_steps, int) or not 1 <= self.rate_steps <= 20:
            raise ConfigError(f"load.rate_steps must be a whole number from 1 to 20; got {self.rate_steps!r}")
        if not isinstance(self.repeats, int) or not 1 <= self.repeats <= 10:
            raise ConfigError(f"load.repeats must be a whole number from 1 to 10; got {self.repeats!r}")
        if not isinstance(self.top_level_repeats, int) or not 0 <= self.top_level_repeats <= 10:
            raise ConfigError(f"load.top_level_repeats must be a whole number from 0 to 10; got {self.top_level_repeats!r}")
        if not isinstance(self.quiet_budget_s, (int, float)) or self.quiet_budget_s < 0:
            raise ConfigError(f"load.quiet_budget_s must be a number of seconds >= 0; got {self.quiet_budget_s!r}")


@dataclass(frozen=True)
class Limits:
    # A slice of waiting for an answer: a request is given up on only once the deployment stopped
    # computing for this long (matrix.progress); after its first answer a cell waits longer, by
    # its own cold start (CellRun.patience_s).
    request_timeout_s: float = default_of("request_timeout_s")
    # Launch to first correct answer, at most, while the deployment keeps computing; a cold
    # start longer than this is BOOT, so it also bounds every wait derived from a cold start.
    boot_timeout_s: float = default_of("boot_timeout_s")
    # The backstop for a cell process that hands back no record; None: derived from the plan
    # (cell_deadline_s below). Set it only to cut a run short on purpose.
    cell_deadline_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("request_timeout_s", "boot_timeout_s"):
            check_setting(name, getattr(self, name), f"limits.{name}")


LOAD_MODES = ("closed", "open")
STOP_GRACE_S = 10.0  # a cell stops its deployment with this grace (SIGTERM, then SIGKILL)
PER_LEVEL_QUIET_S = 1.5  # the most a level waits for a quiet host (matrix.stability)


def cell_deadline_s(cell: Cell, profile: Profile) -> float:
    """How long a cell process may run before the runner stops it: the sum of every bounded wait
    of its plan, each at its bound, so only a stall of forkwise itself (or a bug) reaches it.
    Waits that follow the cell's cold start are bounded through the boot timeout."""
    limits, load = profile.limits, profile.load
    if limits.cell_deadline_s is not None:
        return limits.cell_deadline_s
    boot = limits.boot_timeout_s
    patience = max(limits.request_timeout_s, PATIENCE_COLD_STARTS * boot)
    if cell.scenario != "steady":
        allowance = recovery_allowance_s(boot)
        work = window_s(load.scenario_duration_s, allowance)[1] + allowance + patience
    else:
        levels = len(load.levels)
        work = load.warmup_s + patience + levels * (load.duration_s + PER_LEVEL_QUIET_S + patience)
        # The host probe waits for an idle deployment, each time at most as long as the load before it.
        work += max(load.warmup_s, load.duration_s) + 2 * levels * load.duration_s
        work += HostWatch.PER_CELL_BUDGET_S
        if load.mode == "open":  # each rate: its warm-up and window, its in-flight requests, an idle wait
            rate_s = OpenLoopPlan.warmup_s + load.duration_s
            work += (len(load.rates) or load.rate_steps) * (2 * rate_s + patience + STOP_GRACE_S)
    if cell.database != DEFAULT_DATABASE:  # its own PostgreSQL: started, stopped, restarted at most once
        work += 3 * postgres.PG_CTL_WAIT_S
    return round(2 * boot + work + 2 * STOP_GRACE_S, 1)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    cells: tuple[Cell, ...]
    load: LoadSettings = field(default_factory=LoadSettings)
    limits: Limits = field(default_factory=Limits)
    gpu_policy: str = gpu.DEFAULT_GPU_POLICY  # device=gpu cells: grow, fraction or off (frameworks' defaults)
    recommend: Budgets = field(default_factory=Budgets)  # the [recommend] table: the report's budgets

    def select(self, only: dict[str, set[str]]) -> list[Cell]:
        return [c for c in self.cells if all(str(getattr(c, axis)) in values for axis, values in only.items())]


def profile_names() -> list[str]:
    folder = importlib_resources.files("forkwise.matrix") / "profiles"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _validate_axis(axis: str, values: list) -> list:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"axis {axis!r} must be a non-empty list")
    valid = {
        "strategy": registry.names(), "server": servers.names(), "device": DEVICES, "scenario": list(SCENARIOS),
        "backend": gpu.BACKENDS, "database": DATABASES, "db_reset": DB_RESET_POLICIES,
    }.get(axis)
    for value in values:
        if valid is not None and value not in valid:
            raise ConfigError(f"axis {axis}: {value!r} is not one of {', '.join(valid)}")
        if axis == "threads" and not (value in THREAD_LABELS or (type(value) is int and value >= 1)):
            raise ConfigError(f"axis threads: {value!r} is not one of {', '.join(THREAD_LABELS)} nor a whole number >= 1")
        if axis == "db_in_master" and not isinstance(value, bool):
            raise ConfigError(f"axis db_in_master: {value!r} is not true or false")
        if axis == "workers" and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"axis workers: {value!r} is not a whole number >= 1")
        if axis == "model" and value not in BUILTIN_MODELS and not str(value).endswith(".keras"):
            raise ConfigError(f"axis model: {value!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .keras path")
    return [str(v) for v in values] if axis == "threads" else values


def _product(block: dict) -> list[Cell]:
    unknown = set(block) - set(AXES)
    if unknown:
        raise ConfigError(f"unknown axes {sorted(unknown)}; axes are {', '.join(AXES)}")
    axes: dict[str, list] = {}
    for axis in AXES:
        if axis in block:
            axes[axis] = _validate_axis(axis, block[axis])
        elif axis in AXIS_DEFAULTS:
            axes[axis] = AXIS_DEFAULTS[axis]
        else:
            raise ConfigError(f"profile: axis {axis!r} is missing")
    cells = [Cell(**dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
    # A scenario that cannot apply (kill-model-server without a model server, restart-database
    # without a database server) is no cell.
    return [c for c in cells if SCENARIOS[c.scenario].fits(registry.get(c.strategy), c.database)]


PROFILE_KEYS = ("description", "gpu_policy", "axes", "include", "load", "limits", "recommend")


def _from_table(settings: type, table, section: str):
    """A profile's [section] as `settings` (a dataclass): an unknown key is named, with the valid ones."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    valid = [f.name for f in dataclasses.fields(settings)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown [{section}] keys {unknown}; valid keys: {', '.join(valid)}")
    return settings(**{key: tuple(value) if isinstance(value, list) else value for key, value in table.items()})


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (matrix/profiles/NAME.toml) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text, name = path.read_text(), path.stem
    elif path.suffix == ".toml":
        raise ConfigError(f"profile file {name_or_path} does not exist; profiles: {', '.join(profile_names())}")
    else:
        if name_or_path not in profile_names():
            raise ConfigError(f"unknown profile {name_or_path!r}; profiles: {', '.join(profile_names())}, or a .toml path")
        text = (importlib_resources.files("forkwise.matrix") / "profiles" / f"{name_or_path}.toml").read_text()
        name = name_or_path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {name}: {exc}") from None
    unknown = sorted(set(data) - set(PROFILE_KEYS))
    if unknown:
        raise ConfigError(f"profile {name}: unknown keys {unknown}; valid keys: {', '.join(PROFILE_KEYS)}")
    cells = _product(data.get("axes", {}))
    for block in data.get("include", []):  # extra cells beyond the main product
        cells += _product(block)
    unique = list(dict.fromkeys(cells))
    try:
        load = _from_table(LoadSettings, data.get("load", {}), "load")
        limits = _from_table(Limits, data.get("limits", {}), "limits")
    except ConfigError as exc:
        raise ConfigError(f"profile {name}: {exc}") from None
    policy = gpu.check_choice(f"profile {name}: gpu_policy", data.get("gpu_policy", gpu.DEFAULT_GPU_POLICY),
                              gpu.GPU_POLICIES)
    if policy == "fraction" and any(c.device == "gpu" and c.backend != "jax" for c in unique):
        raise ConfigError(f"profile {name}: gpu_policy 'fraction' applies to the jax backend only; use 'grow'")
    recommend = Budgets.from_table(data.get("recommend", {}), f"profile {name}")
    return Profile(name=name, description=data.get("description", ""), cells=tuple(unique), load=load,
                   limits=limits, gpu_policy=policy, recommend=recommend)


def parse_only(items: list[str]) -> dict[str, set[str]]:
    """['strategy=lazy,server=uwsgi', 'workers=2'] -> {'strategy': {'lazy'}, ...}."""
    only: dict[str, set[str]] = {}
    for item in items:
        current = None
        for part in item.split(","):
            if "=" in part:
                current, value = (x.strip() for x in part.split("=", 1))
                if current not in AXES:
                    raise ConfigError(f"--only: unknown axis {current!r}; axes are {', '.join(AXES)}")
            elif current is None:
                raise ConfigError(f"--only: expected AXIS=VALUE, got {part!r}")
            else:
                value = part.strip()
            only.setdefault(current, set()).add(value)
    return only


# --- one cell, in its own process ----------------------------------------------------------


class HostWatch:
    """The matrix process's side of the CPU probe: the run's reference (stability.RunReference:
    calibrated when the first loaded cell asks for it, re-based when the cells' probes say it does
    not describe this host) and what is left of the run's waiting budget. A run with no load
    levels never probes."""

    PER_CELL_BUDGET_S = PER_CELL_QUIET_BUDGET_S

    def __init__(self, budget_s: float):
        self.reference = stability.RunReference()
        self.budget_left_s = budget_s

    def reference_ms(self) -> float:
        return self.reference.ms()

    def cell_budget_s(self) -> float:
        return min(self.PER_CELL_BUDGET_S, self.budget_left_s)

    def after_cell(self, record: CellRecord) -> None:
        self.budget_left_s = max(0.0, self.budget_left_s - record.evidence.timings_s.get("quiet_wait_s", 0.0))
        self.reference.observe(lv.host_slowdown for lv in record.load)

    def run_info(self, budget_s: float) -> dict:
        """What run.json says of the probe; empty when the run never probed."""
        ref = self.reference
        if ref.calibrated_ms is None:
            return {}
        return {"probe_reference_ms": round(ref.calibrated_ms, 3), "probe_final_reference_ms": round(ref.ms(), 3),
                "probe_rebased": ref.rebased, "quiet_wait_s": round(budget_s - self.budget_left_s, 1)}


def cell_plan(cell: Cell, profile: Profile, host: HostWatch | None = None) -> CellPlan:
    """What the cell process runs: the cell's axes with the profile's load and limits."""
    load, limits = profile.load, profile.limits
    plan = CellPlan(
        strategy=cell.strategy, server=cell.server, workers=cell.workers, model=cell.model,
        request_timeout_s=limits.request_timeout_s, boot_timeout_s=limits.boot_timeout_s, scenario=cell.scenario,
        device=cell.device, backend=cell.backend, gpu_policy=profile.gpu_policy, database=cell.database,
        db_reset=cell.db_reset, db_in_master=cell.db_in_master, runtime_threads=cell.threads,
    )
    if cell.scenario != "steady":
        return dataclasses.replace(plan, scenario_duration_s=load.scenario_duration_s)
    if load.levels:
        plan = dataclasses.replace(plan, load_levels=load.levels, duration_s=load.duration_s,
                                   warmup_s=load.warmup_s, intervals=load.intervals)
        if host is not None:
            plan = dataclasses.replace(plan, probe_reference_ms=round(host.reference_ms(), 3),
                                       quiet_budget_s=round(host.cell_budget_s(), 1))
    if load.mode == "open":
        plan = dataclasses.replace(plan, open_loop=True, p99_budget_ms=profile.recommend.p99_ms,
                                   rate_steps=load.rate_steps, duration_s=load.duration_s, rates=load.rates)
    return plan


def cell_command(plan_path: Path, record_path: Path, home: Path) -> list[str]:
    """The cell process: its plan in a JSON file, its record handed back in another."""
    return [sys.executable, "-m", "forkwise", "--home", str(home), "cell", "--plan", str(plan_path),
            "--record-out", str(record_path)]


def failed_cell_record(cell: Cell, judgement: verdicts.Judgement, log_tail: str, duration_s: float) -> CellRecord:
    """The record of a cell whose process did not hand one back (deadline, or forkwise failed)."""
    return CellRecord(
        strategy=cell.strategy, server=cell.server, workers=cell.workers,
        threads=servers.get(cell.server).threads, model=cell.model, device=cell.device, backend=cell.backend,
        verdict=judgement.verdict,
        cold_start_s=None, warm_all_s=None, requests=0, ok=0, errors=ErrorCounts(),
        rows_expected=0, rows_found=0, worker_pids=(),
        evidence=Evidence(findings=judgement.findings, log_tail=log_tail),
        environment=environment.current(),
        started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(duration_s, 2), scenario=cell.scenario,
        database=cell.database, db_reset=cell.db_reset, db_in_master=cell.db_in_master, runtime_threads=cell.threads,
    )


def read_phase(path: Path) -> tuple[str, float | None]:
    """What a cell process last said it was doing (cell.PHASE_FILE_VAR): (phase, seconds into the
    cell), or ("", None) when it said nothing."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return "", None
    at, _, phase = text.partition("\t")
    try:
        return phase, float(at)
    except ValueError:
        return text, None


def run_cell_process(cell: Cell, profile: Profile, home: Path, host: HostWatch | None = None) -> CellRecord:
    """Run `forkwise cell` as a child with a hard deadline; always stop all it started."""
    tag = secrets.token_hex(8)
    deadline_s = cell_deadline_s(cell, profile)
    with tempfile.TemporaryDirectory(prefix="forkwise-cell-plan-") as tmp:
        phase_file, plan_path, record_path = Path(tmp) / "phase", Path(tmp) / "plan.json", Path(tmp) / "record.json"
        plan_path.write_text(cell_plan(cell, profile, host).to_json())
        env = {**os.environ, MATRIX_TAG_VAR: tag, PHASE_FILE_VAR: str(phase_file)}
        start = time.monotonic()
        proc = subprocess.Popen(cell_command(plan_path, record_path, home), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                text=True)
        try:
            out, err = proc.communicate(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            judgement = verdicts.judge_missed_deadline(deadline_s, *read_phase(phase_file))
            return failed_cell_record(cell, judgement, err[-2000:], time.monotonic() - start)
        finally:
            # Interrupted: let the cell stop its own server first (it turns SIGTERM into cleanup).
            stop_process(proc, grace_s=20)
            # Whatever the cell started and did not stop (a server it could not reap) carries our tag.
            for leftover in tagged_processes(MATRIX_TAG_VAR, tag):
                leftover.kill()
            # A PostgreSQL server of a cell that was killed: found by its directory's owner, not a tag.
            postgres.reap_orphans()
        record_text = record_path.read_text() if record_path.exists() else ""
    if proc.returncode != 0 or not record_text:
        return failed_cell_record(cell, verdicts.judge_no_record(proc.returncode), err[-2000:],
                                  time.monotonic() - start)
    try:
        return CellRecord.from_dict(json.loads(record_text))
    except (ValueError, RecordError) as exc:
        return failed_cell_record(cell, verdicts.judge_no_record(proc.returncode, str(exc)), err[-2000:],
                                  time.monotonic() - start)


# --- progress ------------------------------------------------------------------------------


class Progress:
    """Launches done out of planned, the current cell and pass, elapsed time, each verdict as it lands."""

    def __init__(self, total: int, plain: bool, passes: int = 1):
        self.total, self.done, self.passes = total, 0, passes
        self.live = not plain and sys.stderr.isatty()
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 60:02d}:{s % 60:02d}"

    def _pass(self, number: int) -> str:
        return f" pass {number}/{self.passes}" if self.passes > 1 else ""

    def starting(self, cell: Cell, number: int = 1) -> None:
        text = f"[{self.done}/{self.total} {self._elapsed()}{self._pass(number)}] running {cell.id}"
        if self.live:
            sys.stderr.write("\r\033[2K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finished(self, record: CellRecord, skipped: bool = False, number: int = 1) -> None:
        self.done += 1
        prefix = "\r\033[2K" if self.live else ""
        note = " (kept from the earlier run)" if skipped else ""
        sys.stderr.write(f"{prefix}[{self.done}/{self.total} {self._elapsed()}{self._pass(number)}] "
                         f"{summary_line(record)}{note}\n")
        sys.stderr.flush()

    def dropped(self, count: int) -> None:
        """Launches planned but not run (a cell that failed is not launched again)."""
        self.total -= count


# --- the run -------------------------------------------------------------------------------


def report_dir(out: Path, run_info: dict | None = None, p99_ms: float | None = None,
               memory_mb: float | None = None) -> list[Path]:
    """Publish the run in `out` from its records (every launch, as measured); the budgets of the
    recommendation are the run's (run.json), with `p99_ms` and `memory_mb` set on the command line."""
    from forkwise.matrix.report import write_report

    if "hosts" in _saved_run_info(out):  # a folder `forkwise merge` wrote: one section per host
        from forkwise.matrix.hosts import report_merged

        return report_merged(Path(out), p99_ms=p99_ms, memory_mb=memory_mb)
    records_path = Path(out) / RECORDS_FILE
    records = list(read_records(records_path))
    if not records:
        raise RecordError(f"{records_path} holds no records")
    info = run_info or _saved_run_info(out)
    if p99_ms is not None or memory_mb is not None:
        budgets = Budgets.from_dict(info.get("recommend")).overridden(p99_ms, memory_mb, "command line")
        info = {**info, "recommend": budgets.to_dict()}
    return write_report(records, Path(out), info.get("profile", Path(out).name), info)


def _saved_run_info(out: Path) -> dict:
    path = Path(out) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def skip_gpu_cells(cells: list[Cell]) -> tuple[list[Cell], dict]:
    """On a host without a GPU, drop the device=gpu cells and say why (printed, and for run.json)."""
    wanted = [c for c in cells if c.device == "gpu"]
    if not wanted:
        return cells, {}
    info = gpu.probe()
    if info.available:
        return cells, {}
    reason = f"no GPU found ({info.reason})"
    print(f"forkwise: skipping {len(wanted)} gpu cells: {reason}", file=sys.stderr)
    return [c for c in cells if c.device != "gpu"], {"cells": [c.id for c in wanted], "reason": reason}


def skip_database_cells(cells: list[Cell]) -> tuple[list[Cell], dict]:
    """On a host without PostgreSQL, drop the cells that need it and say why (printed, and for run.json)."""
    wanted = [c for c in cells if c.database != DEFAULT_DATABASE]
    if not wanted:
        return cells, {}
    available, reason = postgres.available()
    if available:
        return cells, {}
    print(f"forkwise: skipping {len(wanted)} PostgreSQL cells: {reason}", file=sys.stderr)
    return [c for c in cells if c.database == DEFAULT_DATABASE], {"cells": [c.id for c in wanted], "reason": reason}


def wants_launch(cell: Cell, done: list[CellRecord], number: int) -> bool:
    """Whether launch `number` of a cell is worth running: only steady cells are repeated, and
    only while every earlier launch was OK (a failed cell has no throughput to repeat)."""
    if number == 1:
        return True
    return cell.scenario == "steady" and all(r.verdict.ok and r.load for r in done)


def run_matrix(profile: str, only: list[str], out: Path | None, resume: bool, plain: bool, home: Path,
               p99_ms: float | None = None, memory_mb: float | None = None, shard: Shard = WHOLE) -> int:
    prof = load_profile(profile)
    selection = parse_only(only)
    cells = prof.select(selection)
    if not cells:
        raise ConfigError(f"--only {' '.join(only)} selects no cell of profile {prof.name!r}")
    if shard != WHOLE:  # split before skipping gpu cells: every host computes the same split
        selected = len(cells)
        cells = shard_cells(cells, prof, shard)
        print(f"forkwise: shard {shard} of profile {prof.name!r}: {len(cells)} of {selected} cells", file=sys.stderr)
    cells, skipped = skip_gpu_cells(cells)
    cells, skipped_database = skip_database_cells(cells)
    if not cells:
        print(f"forkwise: no cell of profile {prof.name!r} left to run; nothing written", file=sys.stderr)
        return 0
    out = Path(out or Path("results") / prof.name)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / RECORDS_FILE
    launches: dict[str, list[CellRecord]] = {}  # cell id -> its launches so far, in order
    if resume and records_path.exists():
        for record in read_records(records_path):
            launches.setdefault(record.cell_id, []).append(record)
    elif records_path.exists():
        records_path.unlink()  # a fresh run: records of an earlier one are not mixed in
    for model, backend in sorted({(c.model, c.backend) for c in cells}):
        ensure_spec(home, model, backend=backend)  # build once, before any cell is timed
    started = time.monotonic()
    run_info = {
        "profile": prof.name, "description": prof.description,
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["forkwise", *sys.argv[1:]]) if "matrix" in sys.argv[1:] else "forkwise matrix",
        "cells": len(cells), "load": dataclasses.asdict(prof.load) | {"levels": list(prof.load.levels)},
        "limits": dataclasses.asdict(prof.limits), "gpu_policy": prof.gpu_policy,
        "recommend": prof.recommend.overridden(p99_ms, memory_mb, "command line").to_dict(),
        # What `forkwise merge` checks: shards of one profile, one schema, every shard present.
        "shard": shard.to_dict(), "only": {axis: sorted(values) for axis, values in sorted(selection.items())},
        "schema_version": SCHEMA_VERSION,
    }
    if skipped:
        run_info["skipped"] = skipped
    if skipped_database:
        run_info["skipped_database"] = skipped_database
    repeats = prof.load.repeats + prof.load.top_level_repeats
    top_level_only = dataclasses.replace(prof, load=dataclasses.replace(prof.load, levels=(max(prof.load.levels),)))
    host = HostWatch(prof.load.quiet_budget_s)
    progress = Progress(len(cells) * repeats, plain, repeats)
    for number in range(1, repeats + 1):
        plan = prof if number <= prof.load.repeats else top_level_only
        # Every pass in the same order: each cell's launches lie one pass apart. (Reversing
        # alternate passes puts the last cells' launches back to back, in the same slow
        # spell of the machine, where they agree by chance.) Each strategy's cells are spread
        # over the pass (launches.pass_order), so they do not share one slow spell.
        for cell in pass_order(cells, lambda c: c.strategy):
            done = launches.get(cell.id, [])
            if len(done) >= number:
                progress.finished(done[number - 1], skipped=True, number=number)
                continue
            if not wants_launch(cell, done, number):
                progress.dropped(1)
                continue
            progress.starting(cell, number)
            record = run_cell_process(cell, plan, home, host)
            host.after_cell(record)
            append_record(records_path, record)
            launches.setdefault(cell.id, []).append(record)
            progress.finished(record, number=number)
    run_info["duration_s"] = round(time.monotonic() - started, 1)
    run_info.update(host.run_info(prof.load.quiet_budget_s))
    run_info["launches"] = progress.done
    (out / "run.json").write_text(json.dumps(run_info, indent=2))
    paths = report_dir(out, run_info)
    print(f"forkwise: {len(cells)} cells, {progress.done} launches in {run_info['duration_s']:.0f} s; wrote {', '.join(str(p) for p in paths)}",
          file=sys.stderr)
    return 0
