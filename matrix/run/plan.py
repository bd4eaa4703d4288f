"""A cell's plan, declared once: what one ``forkwise cell`` runs and how hard it looks at it.

Each setting of ``CellPlan`` is declared here, once, as data (gunicorn's config.py model): its
default, its help, its kind (how it reads from the command line and from JSON) and its check.
From that declaration come the ``forkwise cell`` flags (``add_plan_args``), the plan read back
from parsed flags (``CellPlan.from_args``), the argv that gives a plan on the command line
(``to_argv``) and the JSON the matrix runner hands a cell process (``to_json`` / ``from_json``).
The defaults of a profile's [load] and [limits] that are also a cell's come from here too
(``default_of``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise import checks, gpu, servers
from forkwise.checks import BOOL, FLOAT, INT, LEVELS, PATH, RATES, TEXT, Kind, above, optional
from forkwise.config import resolve_threads
from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import Cell, WithAxes, axes
from forkwise.matrix.records.budgets import DEFAULT_P99_MS
from forkwise.matrix.run.open_loop import OpenLoopPlan
from forkwise.servers.base import DEFAULT_WORKER_TIMEOUT_S

DRIVERS = ("auto", "wrk", "builtin")
# Seconds a cell may wait, in all, for a quiet host before its load levels (forkwise.matrix.run.stability);
# the matrix runner hands each cell at most this much of the run's budget.
PER_CELL_QUIET_BUDGET_S = 10.0


def check_in_flight(cell: Cell) -> None:
    """An in_flight axis the cell's server setting cannot act on is a ConfigError (not ignored)."""
    if cell.in_flight:
        servers.get(cell.server).in_flight(cell.in_flight)


# --- the declaration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting's declaration, carried in its dataclass field's metadata."""

    help: str
    kind: Kind
    check: Callable[[Any], None] | None = None
    flag: str | None = None  # the `forkwise cell` flag; None: in the plan's JSON only
    choices: tuple | None = None
    metavar: str | None = None

    def cli_flag(self) -> str:
        """The flag of a setting that has one (cli_fields keeps only those)."""
        if self.flag is None:
            raise AssertionError(f"setting {self.help!r} has no `forkwise cell` flag")
        return self.flag


def setting(help: str, kind: Kind, default: Any = dataclasses.MISSING, *, flag: str | None = None,
            check: Callable[[Any], None] | None = None, choices: tuple | None = None,
            metavar: str | None = None) -> Any:
    """A plan field: its default and its declaration (Setting) in one place."""
    if choices is not None:
        check = checks.one_of(choices)
    return field(default=default, metadata={"setting": Setting(help, kind, check, flag, choices, metavar)})


@dataclass(frozen=True)
class CellPlan(WithAxes):
    """What one cell runs and how hard it looks at it: the cell (its axes, ``matrix.records.axes``)
    and the settings below. In JSON and on the command line the axes stand beside the settings,
    one key and one flag each; ``plan.workers`` reads the cell's axis."""

    cell: Cell = field(metadata={"axes": True})
    # The reference set of the model; None: built (or found) from `model` under --home by the cell.
    spec_path: Path | None = setting("the model's spec file", optional(PATH), None)
    gpu_policy: str = setting("GPU memory policy (device gpu): grow, fraction (jax), off (the frameworks' defaults)",
                              TEXT, gpu.DEFAULT_GPU_POLICY, flag="--gpu-policy", choices=tuple(gpu.GPU_POLICIES))
    boot_timeout_s: float = setting("seconds from launch to the first correct answer, at most", FLOAT, 90.0,
                                    flag="--boot-timeout", check=above(0))
    # A slice of waiting: a request unanswered this long is given up on once the deployment
    # stopped computing (matrix.progress); after the first answer, see CellRun.patience_s.
    request_timeout_s: float = setting("seconds a request waits while the deployment stopped computing", FLOAT,
                                       10.0, flag="--request-timeout", check=above(0))
    verify_requests: int = setting("verification requests", INT, 32, check=above(1, inclusive=True))
    load_levels: tuple[int, ...] = setting("concurrency levels to load-test (empty: verify only)", LEVELS, (),
                                           flag="--load", check=above(1, inclusive=True), metavar="C1,C2")
    warmup_s: float = setting("seconds of load at the highest level before the first measured one (0: none)",
                              FLOAT, 1.0, flag="--warmup", check=above(0, inclusive=True))
    duration_s: float = setting("seconds measured per load level (and per open-loop rate)", FLOAT, 4.0,
                                flag="--duration", check=above(0))
    intervals: int = setting("throughput samples per level", INT, 4, flag="--intervals",
                             check=above(1, inclusive=True))
    driver: str = setting("the load driver: wrk if on PATH (auto), wrk, or builtin", TEXT, "auto", flag="--driver",
                          choices=DRIVERS)
    worker_timeout_s: int = setting("the server's worker timeout, seconds", INT, DEFAULT_WORKER_TIMEOUT_S,
                                    check=above(1, inclusive=True))
    max_batch: int | None = setting("model-server batching: rows per batch", optional(INT), None,
                                    flag="--max-batch", check=above(0))
    max_wait_ms: float | None = setting("model-server batching: wait to fill a batch", optional(FLOAT), None,
                                        flag="--max-wait-ms", check=above(0))
    batch_sizes: str | None = setting("model-server batching: the sizes each call is padded up to (pow2, any, or "
                                      "e.g. 1,8,32)", optional(TEXT), None, flag="--batch-sizes")
    scenario_duration_s: float = setting("seconds of load around the event", FLOAT, 9.0, flag="--scenario-duration",
                                         check=above(0))
    soak_duration_s: float = setting("the soak scenario: seconds of open-loop load after the capacity probe", FLOAT,
                                     60.0, flag="--soak-duration", check=above(0))
    soak_fraction: float = setting("the soak scenario: the offered rate, as a share of the capacity the cell measured",
                                   FLOAT, 0.5, flag="--soak-fraction", check=checks.within(0.05, 1.0))
    profile_dir: Path | None = setting("py-spy the workers and model server at the highest load level; profiles "
                                       "go here", optional(PATH), None, flag="--profile-dir")
    probe_reference_ms: float = setting("the CPU probe's reference from `forkwise matrix` (0: calibrated here, 1 s)",
                                        FLOAT, 0.0, flag="--probe-reference-ms", check=above(0, inclusive=True))
    quiet_budget_s: float = setting("seconds, in all, to wait for a quiet host before load levels", FLOAT,
                                    PER_CELL_QUIET_BUDGET_S, flag="--quiet-budget", check=above(0, inclusive=True))
    open_loop: bool = setting("after the load levels, find the highest rate (Poisson arrivals) whose p99 is "
                              "within budget", BOOL, False, flag="--open-loop")
    rates: tuple[float, ...] = setting("open loop: these rates, ascending, until one misses (empty: a search below "
                                       "the peak)", RATES, (), flag="--rates", check=above(0), metavar="R1,R2")
    rate_steps: int = setting("open loop: rates tried by the search", INT, 5, flag="--rate-steps",
                              check=above(1, inclusive=True))
    p99_budget_ms: float | None = setting("open loop: the p99 budget (none: the recommendation's)",
                                          optional(FLOAT), None, flag="--p99-budget-ms", check=above(0))

    def __post_init__(self) -> None:
        for f in settings_fields():
            decl: Setting = f.metadata["setting"]
            if decl.check is not None:
                try:
                    decl.check(getattr(self, f.name))
                except ValueError as exc:
                    raise ConfigError(f"plan: {f.name}: {exc}") from None
        check_in_flight(self.cell)

    # --- derived parts ------------------------------------------------------------------

    @property
    def overrides(self) -> dict:
        """The AppSettings overrides of the deployment (batching, the runtime's threads)."""
        found = {k: v for k, v in (("max_batch", self.max_batch), ("max_wait_ms", self.max_wait_ms),
                                   ("batch_sizes", self.batch_sizes)) if v is not None}
        found["intra_op_threads"] = resolve_threads(self.runtime_threads, self.workers, os.cpu_count() or 1)
        return found

    @property
    def open_loop_plan(self) -> OpenLoopPlan | None:
        """The cell's open-loop phase (forkwise.matrix.run.open_loop), or None."""
        if not self.open_loop:
            return None
        return OpenLoopPlan(p99_budget_ms=self.p99_budget_ms or DEFAULT_P99_MS, rates=self.rates,
                            steps=self.rate_steps, duration_s=self.duration_s)

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        settings = {f.name: f.metadata["setting"].kind.dump(getattr(self, f.name)) for f in settings_fields()}
        return {**self.cell.to_dict(), **settings}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> CellPlan:
        """A plan from its JSON form; unknown keys and bad values are a ConfigError that says which."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in settings_fields()}
        by_axis = {a.name: a for a in axes()}
        unknown = sorted(set(data) - set(fields) - set(by_axis))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {', '.join([*by_axis, *fields])}")
        missing = [name for name, one in by_axis.items() if one.required and name not in data]
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        cell = Cell(**{name: by_axis[name].read(value, where) for name, value in data.items() if name in by_axis})
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in fields:
                continue
            try:
                values[name] = fields[name].metadata["setting"].kind.load(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from None
        return cls(cell=cell, **values)

    @classmethod
    def from_json(cls, text: str, where: str = "plan") -> CellPlan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from None
        return cls.from_dict(data, where)

    # --- the command line ---------------------------------------------------------------

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CellPlan:
        """The plan the `forkwise cell` flags (add_plan_args) give; a bad axis value is a ConfigError."""
        return cls(cell=cell_from_args(args, "cell"), **{f.name: getattr(args, f.name) for f in cli_fields()})

    def to_argv(self) -> list[str]:
        """The `forkwise cell` flags that give this plan (axes and settings at their default left out)."""
        argv: list[str] = []
        for one in axes():
            value = self.cell[one.name]
            if one.required or value != one.default:
                argv += [one.flag] if one.kind is BOOL else [one.flag, one.kind.text(value)]
        for f in cli_fields():
            decl: Setting = f.metadata["setting"]
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            argv += [decl.cli_flag()] if decl.kind is BOOL else [decl.cli_flag(), decl.kind.text(value)]
        return argv


def cell_from_args(args: argparse.Namespace, where: str, deployment_only: bool = False) -> Cell:
    """The cell the axis flags give, each value checked as its axis declares (a name a registry
    lacks, a number out of range): one ConfigError line that says what to fix, not a usage dump."""
    chosen = [a for a in axes() if a.deployment or not deployment_only]
    return Cell(**{a.name: a.read(getattr(args, a.name), where) for a in chosen if getattr(args, a.name) is not None})


def settings_fields() -> list[dataclasses.Field]:
    """The plan's settings (every field but its cell)."""
    return [f for f in dataclasses.fields(CellPlan) if "setting" in f.metadata]


def cli_fields() -> list[dataclasses.Field]:
    return [f for f in settings_fields() if f.metadata["setting"].flag is not None]


def default_of(name: str) -> Any:
    """A plan setting's default: the one place it is declared."""
    return {f.name: f.default for f in settings_fields()}[name]


def check_setting(name: str, value: Any, where: str) -> None:
    """A value of the plan setting `name`, given elsewhere (a profile's [load]), checked as the plan does."""
    decl: Setting = {f.name: f.metadata["setting"] for f in settings_fields()}[name]
    checks.validator(decl.kind, decl.check, text=False)(where, value)


# The plan's settings that belong to a deployment itself (what `forkwise serve` runs), beside the
# axes that do (``Axis.deployment``).
DEPLOYMENT_SETTINGS = ("gpu_policy",)


def add_axis_args(parser: argparse.ArgumentParser, required: bool = True, deployment_only: bool = False) -> None:
    """A flag per axis (`--strategy`, `--workers`, ...), from the declaration (``matrix.records.axes``)."""
    for one in axes():
        if deployment_only and not one.deployment:
            continue
        if one.kind is BOOL:
            parser.add_argument(one.flag, dest=one.name, action="store_true", help=one.help)
            continue
        shown = "" if one.required else f" (default: {one.kind.text(one.default)})"
        parser.add_argument(one.flag, dest=one.name, type=checks.argparse_type(one.kind),
                            metavar=one.name.upper(), default=None if one.required else one.default,
                            required=required and one.required, help=one.help + shown)


def add_plan_args(parser: argparse.ArgumentParser, required: bool = True, only: tuple[str, ...] | None = None) -> None:
    """The `forkwise cell` flags: one per axis and one per plan setting that has one, from the
    declarations. `required`: whether the axes without a default must be given (not so where a
    --plan file may); `only`: these settings only, and the deployment's axes (`forkwise serve`)."""
    add_axis_args(parser, required, deployment_only=only is not None)
    for f in cli_fields():
        if only is not None and f.name not in only:
            continue
        decl: Setting = f.metadata["setting"]
        if decl.kind is BOOL:
            parser.add_argument(decl.cli_flag(), dest=f.name, action="store_true", help=decl.help)
            continue
        has_default = f.default is not dataclasses.MISSING
        shown = decl.kind.text(f.default) if has_default and f.default not in (None, ()) else "none"
        metavar = decl.metavar or (None if decl.choices else decl.cli_flag().lstrip("-").upper().replace("-", "_"))
        parser.add_argument(
            decl.cli_flag(), dest=f.name, type=checks.argparse_type(decl.kind, decl.check), choices=decl.choices,
            metavar=metavar, default=f.default if has_default else None, required=required and not has_default,
            help=decl.help if not has_default else f"{decl.help} (default: {shown})",
        )
