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

from forkwise import gpu
from forkwise.config import (
    DATABASES,
    DB_RESET_POLICIES,
    DEFAULT_DATABASE,
    DEFAULT_DB_RESET,
    THREAD_LABELS,
    resolve_threads,
)
from forkwise.errors import ConfigError
from forkwise.matrix.run.open_loop import OpenLoopPlan

DRIVERS = ("auto", "wrk", "builtin")
# Seconds a cell may wait, in all, for a quiet host before its load levels (forkwise.matrix.run.stability);
# the matrix runner hands each cell at most this much of the run's budget.
PER_CELL_QUIET_BUDGET_S = 10.0


# --- kinds: how a value reads from the command line and from JSON -------------------------------


@dataclass(frozen=True)
class Kind:
    """How a setting's value is written: `parse` reads CLI text, `load` a JSON value (raising
    ValueError with the reason), `dump` gives the JSON value, `text` the CLI text."""

    parse: Callable[[str], Any]
    load: Callable[[Any], Any]
    dump: Callable[[Any], Any] = lambda v: v
    text: Callable[[Any], str] = str


def _load_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _load_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _load_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _load_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _parse_number(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None

    return parse


def _parse_list(kind: type, what: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def _load_list(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def load(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(item(x) for x in value)

    return load


INT = Kind(parse=_parse_number(int), load=_load_int)
FLOAT = Kind(parse=_parse_number(float), load=_load_float, text=repr)
TEXT = Kind(parse=str, load=_load_str)
BOOL = Kind(parse=lambda text: True, load=_load_bool)  # a flag: present means true
LEVELS = Kind(parse=_parse_list(int, "whole numbers"), load=_load_list(_load_int), dump=list,
              text=lambda v: ",".join(map(str, v)))
RATES = Kind(parse=_parse_list(float, "requests a second"), load=_load_list(_load_float), dump=list,
             text=lambda v: ",".join(map(repr, v)))
PATH = Kind(parse=Path, load=lambda v: Path(_load_str(v)), dump=str)


def optional(kind: Kind) -> Kind:
    """The kind, or None (JSON null; on the command line: the flag left out)."""
    return Kind(parse=kind.parse, load=lambda v: None if v is None else kind.load(v),
                dump=lambda v: None if v is None else kind.dump(v), text=kind.text)


# --- checks ----------------------------------------------------------------------------------


def above(low: float, inclusive: bool = False) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is None:
            return
        values = value if isinstance(value, tuple) else (value,)
        if any(v < low or (v == low and not inclusive) for v in values):
            raise ValueError(f"must be {'at least' if inclusive else 'above'} {low:g}, got {value!r}")

    return check


def one_of(choices: tuple[str, ...]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return check


def _threads_label(value: str) -> None:
    if not (value in THREAD_LABELS or (value.isdigit() and int(value) >= 1)):
        raise ValueError(f"expected {', '.join(THREAD_LABELS)} or a whole number >= 1, got {value!r}")


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
        check = one_of(choices)
    return field(default=default, metadata={"setting": Setting(help, kind, check, flag, choices, metavar)})


@dataclass(frozen=True)
class CellPlan:
    """What one cell runs and how hard it looks at it."""

    strategy: str = setting("the fork strategy (forkwise strategies)", TEXT, flag="--strategy")
    server: str = setting("the server setting (forkwise strategies)", TEXT, flag="--server")
    workers: int = setting("worker processes", INT, 2, flag="--workers", check=above(1, inclusive=True))
    model: str = setting("a built-in model (default, large, tiny) or the path of your own .keras file", TEXT,
                         "default", flag="--model")
    # The reference set of the model; None: built (or found) from `model` under --home by the cell.
    spec_path: Path | None = setting("the model's spec file", optional(PATH), None)
    device: str = setting("cpu hides every GPU from the deployment; gpu needs an NVIDIA GPU", TEXT, "cpu",
                          flag="--device", choices=tuple(gpu.DEVICES))
    backend: str = setting("the Keras backend serving the model (jax and torch: pip install 'forkwise[jax]' / "
                           "'[torch]')", TEXT, gpu.DEFAULT_BACKEND, flag="--backend", choices=tuple(gpu.BACKENDS))
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
    worker_timeout_s: int = setting("the server's worker timeout, seconds", INT, 30, check=above(1, inclusive=True))
    max_batch: int | None = setting("model-server batching: rows per batch", optional(INT), None,
                                    flag="--max-batch", check=above(0))
    max_wait_ms: float | None = setting("model-server batching: wait to fill a batch", optional(FLOAT), None,
                                        flag="--max-wait-ms", check=above(0))
    batch_sizes: str | None = setting("model-server batching: the sizes each call is padded up to (pow2, any, or "
                                      "e.g. 1,8,32)", optional(TEXT), None, flag="--batch-sizes")
    scenario: str = setting("a reliability scenario: steady, kill-worker, kill-model-server, reload, recycle, "
                            "db-contention, bad-input, restart-database (--database postgresql)", TEXT, "steady",
                            flag="--scenario")
    scenario_duration_s: float = setting("seconds of load around the event", FLOAT, 9.0, flag="--scenario-duration",
                                         check=above(0))
    profile_dir: Path | None = setting("py-spy the workers and model server at the highest load level; profiles "
                                       "go here", optional(PATH), None, flag="--profile-dir")
    probe_reference_ms: float = setting("the CPU probe's reference from `forkwise matrix` (0: calibrated here, 1 s)",
                                        FLOAT, 0.0, flag="--probe-reference-ms", check=above(0, inclusive=True))
    quiet_budget_s: float = setting("seconds, in all, to wait for a quiet host before load levels", FLOAT,
                                    PER_CELL_QUIET_BUDGET_S, flag="--quiet-budget", check=above(0, inclusive=True))
    database: str = setting("sqlite: a file in the run directory; postgresql: a PostgreSQL server of the "
                            "deployment's own (from the system packages), over loopback TCP with TLS; "
                            "postgresql-unix: the same over its Unix socket", TEXT, DEFAULT_DATABASE,
                            flag="--database", choices=tuple(DATABASES))
    db_reset: str = setting("what each forked worker does with a database engine its master made: its own new "
                            "engine, dispose(close=False), a NullPool, or none (the inherited pool: the hazard)",
                            TEXT, DEFAULT_DB_RESET, flag="--db-reset", choices=tuple(DB_RESET_POLICIES))
    db_in_master: bool = setting("the app queries the database in the master before fork (only a preloaded app "
                                 "has one)", BOOL, False, flag="--db-in-master")
    runtime_threads: str = setting("the runtime's intra-op threads in each process that loads the model: default "
                                   "(the runtime's), per-worker (the cores shared out among the workers), or a "
                                   "number", TEXT, "default", flag="--threads", check=_threads_label)
    open_loop: bool = setting("after the load levels, find the highest rate (Poisson arrivals) whose p99 is "
                              "within budget", BOOL, False, flag="--open-loop")
    rates: tuple[float, ...] = setting("open loop: these rates, ascending, until one misses (empty: a search below "
                                       "the peak)", RATES, (), flag="--rates", check=above(0), metavar="R1,R2")
    rate_steps: int = setting("open loop: rates tried by the search", INT, 5, flag="--rate-steps",
                              check=above(1, inclusive=True))
    p99_budget_ms: float | None = setting("open loop: the p99 budget (none: the recommendation's)",
                                          optional(FLOAT), None, flag="--p99-budget-ms", check=above(0))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            decl: Setting = f.metadata["setting"]
            if decl.check is not None:
                try:
                    decl.check(getattr(self, f.name))
                except ValueError as exc:
                    raise ConfigError(f"plan: {f.name}: {exc}") from None

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
        from forkwise.matrix.records.budgets import DEFAULT_P99_MS

        return OpenLoopPlan(p99_budget_ms=self.p99_budget_ms or DEFAULT_P99_MS, rates=self.rates,
                            steps=self.rate_steps, duration_s=self.duration_s)

    # --- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {f.name: f.metadata["setting"].kind.dump(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> CellPlan:
        """A plan from its JSON form; unknown keys and bad values are a ConfigError that says which."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {', '.join(fields)}")
        values = {}
        for name, value in data.items():
            try:
                values[name] = fields[name].metadata["setting"].kind.load(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from None
        missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in values]
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        return cls(**values)

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
        """The plan the `forkwise cell` flags (add_plan_args) give."""
        return cls(**{f.name: getattr(args, f.name) for f in cli_fields()})

    def to_argv(self) -> list[str]:
        """The `forkwise cell` flags that give this plan (settings at their default left out)."""
        argv: list[str] = []
        for f in cli_fields():
            decl: Setting = f.metadata["setting"]
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            argv += [decl.cli_flag()] if decl.kind is BOOL else [decl.cli_flag(), decl.kind.text(value)]
        return argv


def cli_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(CellPlan) if f.metadata["setting"].flag is not None]


def default_of(name: str) -> Any:
    """A plan setting's default: the one place it is declared."""
    return {f.name: f.default for f in dataclasses.fields(CellPlan)}[name]


def check_setting(name: str, value: Any, where: str) -> None:
    """A value of the plan setting `name`, given elsewhere (a profile's [load]), checked as the plan does."""
    decl: Setting = {f.name: f.metadata["setting"] for f in dataclasses.fields(CellPlan)}[name]
    try:
        value = decl.kind.load(value)
        if decl.check is not None:
            decl.check(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _argparse_type(decl: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = decl.kind.parse(text)
            if decl.check is not None:
                decl.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


# The settings of a deployment itself (what `forkwise serve` runs), not of how a cell looks at it.
DEPLOYMENT_SETTINGS = ("strategy", "server", "workers", "model", "device", "backend", "gpu_policy", "database",
                       "db_reset", "db_in_master", "runtime_threads")


def add_plan_args(parser: argparse.ArgumentParser, required: bool = True, only: tuple[str, ...] | None = None) -> None:
    """The `forkwise cell` flags, one per plan setting that has one, from the declaration.
    `required`: whether settings without a default must be given (not so where a --plan file may);
    `only`: these settings only (`forkwise serve`: DEPLOYMENT_SETTINGS)."""
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
            decl.cli_flag(), dest=f.name, type=_argparse_type(decl), choices=decl.choices, metavar=metavar,
            default=f.default if has_default else None, required=required and not has_default,
            help=decl.help if not has_default else f"{decl.help} (default: {shown})",
        )
