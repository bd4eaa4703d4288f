"""A matrix profile: its cells (the product of its axes), how they are loaded, their limits.

Read from matrix/run/profiles/NAME.toml or a .toml path. An unknown key anywhere is a ConfigError
naming the valid ones. The settings a profile shares with a cell's plan ([load] durations,
[limits] timeouts) take their defaults and checks from the plan (forkwise.matrix.run.plan).
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from forkwise import checks, gpu
from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import Axis, Cell, axes, axis_names
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.run.plan import check_in_flight, check_setting, default_of
from forkwise.matrix.run.scenarios import SCENARIOS
from forkwise.strategies import registry

DEVICES = gpu.DEVICES


def _setting(kind: checks.Kind, check: checks.Check | None = None) -> Callable[[str, Any], Any]:
    """A profile's value, as TOML holds it (never text to parse), checked by the one family of checks."""
    return checks.validator(kind, check, text=False)


@dataclass(frozen=True)
class LoadSettings:
    """How each steady cell is loaded. With wrk, intervals last whole seconds (duration_s / intervals,
    rounded, at least 1), and a warm-up of more than 0 s lasts at least 1 s."""

    # The profile's own choice (a cell's plan has none: it only verifies unless given levels).
    levels: tuple[int, ...] = (1, 8, 32)
    # Each launch: load at the highest level before the first measured level. The defaults of the
    # settings a cell has too are its plan's (forkwise.matrix.run.plan), declared there once.
    warmup_s: float = default_of("warmup_s")
    duration_s: float = default_of("duration_s")  # measured seconds per level, per launch
    intervals: int = default_of("intervals")  # rps samples per level, per launch
    # Launches per steady cell, in separate passes over the matrix, one pass apart;
    # a level's spread covers every launch (see forkwise.matrix.analysis.launches).
    repeats: int = 1
    # More passes after those, measuring the highest level only (the level compare tests each
    # strategy at): more launches where the power matters, without booting for the other levels.
    top_level_repeats: int = 0
    scenario_duration_s: float = default_of("scenario_duration_s")  # reliability scenarios: around the event
    # The soak scenario (forkwise.matrix.run.soak): this long at this share of the cell's measured capacity.
    soak_duration_s: float = default_of("soak_duration_s")
    soak_fraction: float = default_of("soak_fraction")
    # Seconds the whole run may spend waiting for the host to leave a slow spell before a level
    # (forkwise.matrix.run.stability); at most 1.5 s a level. 0: never wait, only record.
    quiet_budget_s: float = 60.0
    # "open": after the levels, each steady cell's highest rate (Poisson arrivals) whose p99 is within
    # the profile's [recommend] p99_ms (forkwise.matrix.run.open_loop): these rates, or a search of rate_steps.
    mode: str = "closed"
    rates: tuple[float, ...] = default_of("rates")
    rate_steps: int = default_of("rate_steps")

    def __post_init__(self) -> None:
        _setting(checks.TEXT, checks.one_of(LOAD_MODES))("load.mode", self.mode)
        # The settings a cell's plan has too: checked by the plan's own checks.
        for name, plan_name in (("levels", "load_levels"), ("warmup_s", "warmup_s"), ("duration_s", "duration_s"),
                                ("intervals", "intervals"), ("scenario_duration_s", "scenario_duration_s"),
                                ("rates", "rates"), ("soak_duration_s", "soak_duration_s"),
                                ("soak_fraction", "soak_fraction")):
            check_setting(plan_name, getattr(self, name), f"load.{name}")
        for name, low, high in (("rate_steps", 1, 20), ("repeats", 1, 10), ("top_level_repeats", 0, 10)):
            _setting(checks.INT, checks.within(low, high))(f"load.{name}", getattr(self, name))
        _setting(checks.FLOAT, checks.above(0, inclusive=True))("load.quiet_budget_s", self.quiet_budget_s)


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


@dataclass(frozen=True)
class GoalSettings:
    # After the cells: py-spy profiles of every cell of a missed performance goal and the
    # micro-benchmarks, taken by the run on its own machine into its folder (matrix.goal_evidence).
    evidence: bool = False
    # After the finalists: the pair each ratio goal (1-3) turns on, loaded in interleaved rounds until its
    # interval lies on one side of the target, at most this many rounds (matrix.run.goal_rounds); 0: none.
    rounds: int = 0
    min_rounds: int = 6
    window_s: float = 1.5  # each cell's measured seconds in a round
    warmup_s: float = 0.5  # each cell's unmeasured load before its window

    def __post_init__(self) -> None:
        _setting(checks.BOOL)("goals.evidence", self.evidence)
        _setting(checks.INT, checks.above(0, inclusive=True))("goals.rounds", self.rounds)
        _setting(checks.INT, checks.above(2, inclusive=True))("goals.min_rounds", self.min_rounds)
        _setting(checks.FLOAT, checks.above(0))("goals.window_s", self.window_s)
        _setting(checks.FLOAT, checks.above(0, inclusive=True))("goals.warmup_s", self.warmup_s)


BOOT_MODES = ("auto", "in-turn")


@dataclass(frozen=True)
class FinalistSettings:
    """[finalists]: after the passes, per question, the cells that could be the best measured again
    side by side in randomized interleaved rounds (matrix.run.finalists)."""

    enabled: bool = False
    concurrency: int | None = None  # the load they are ranked at, declared before measuring; None: the highest level
    max_cells: int = 4  # finalists per question, at most
    window_s: float = 2.0  # each finalist's measured seconds in a round
    warmup_s: float = 0.5  # each finalist's unmeasured load before its window
    min_rounds: int = 6
    max_rounds: int = 40
    budget_s: float = 600.0  # a question's rounds stop here, decided or not
    target_mde_pct: float = 5.0  # a finalist within this of the best, with the power to see it, is a tie
    # "auto": booted side by side when they fit in the memory available, else each booted for its
    # window in turn (the rounds stay interleaved); "in-turn": always one at a time.
    boot: str = "auto"
    seed: int | None = None  # the rounds' random orders; None: drawn when the stage starts, and recorded

    def __post_init__(self) -> None:
        for name in ("max_cells", "min_rounds", "max_rounds"):
            _setting(checks.INT, checks.above(2 if name == "max_cells" else 1, inclusive=True))(
                f"finalists.{name}", getattr(self, name))
        for name in ("window_s", "budget_s", "target_mde_pct"):
            _setting(checks.FLOAT, checks.above(0))(f"finalists.{name}", getattr(self, name))
        _setting(checks.FLOAT, checks.above(0, inclusive=True))("finalists.warmup_s", self.warmup_s)
        _setting(checks.BOOL)("finalists.enabled", self.enabled)
        _setting(checks.TEXT, checks.one_of(BOOT_MODES))("finalists.boot", self.boot)
        if self.concurrency is not None:
            _setting(checks.INT, checks.above(1, inclusive=True))("finalists.concurrency", self.concurrency)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    cells: tuple[Cell, ...]
    load: LoadSettings = field(default_factory=LoadSettings)
    limits: Limits = field(default_factory=Limits)
    gpu_policy: str = gpu.DEFAULT_GPU_POLICY  # device=gpu cells: grow, fraction or off (frameworks' defaults)
    recommend: Budgets = field(default_factory=Budgets)  # the [recommend] table: the report's budgets
    goals: GoalSettings = field(default_factory=GoalSettings)  # the [goals] table
    finalists: FinalistSettings = field(default_factory=FinalistSettings)  # the [finalists] table

    def select(self, only: dict[str, set[str]]) -> list[Cell]:
        return [c for c in self.cells if all(str(getattr(c, axis)) in values for axis, values in only.items())]


def profile_names() -> list[str]:
    folder = importlib_resources.files("forkwise.matrix.run") / "profiles"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _axis_values(one: Axis, values: Any) -> list:
    """A profile's values of one axis, each read and checked as the axis declares."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"axis {one.name!r} must be a non-empty list")
    read = [one.read(value, "profile") for value in values]
    if one.name == "scenario":  # the scenarios are the run's: checked where they act
        for value in read:
            if value not in SCENARIOS:
                raise ConfigError(f"axis scenario: {value!r} is not one of {', '.join(SCENARIOS)}")
    return read


def _product(block: dict) -> list[Cell]:
    unknown = set(block) - set(axis_names())
    if unknown:
        raise ConfigError(f"unknown axes {sorted(unknown)}; axes are {', '.join(axis_names())}")
    values: dict[str, list] = {}
    for one in axes():
        if one.name in block:
            values[one.name] = _axis_values(one, block[one.name])
        elif one.required:
            raise ConfigError(f"profile: axis {one.name!r} is missing")
        else:
            values[one.name] = [one.default]
    cells = [Cell(**dict(zip(values, combo, strict=True))) for combo in itertools.product(*values.values())]
    for cell in cells:
        check_in_flight(cell)
    # A scenario that cannot apply (kill-model-server without a model server, restart-database
    # without a database server) is no cell.
    return [c for c in cells if SCENARIOS[c.scenario].fits(registry.get(c.strategy), c.database)]


PROFILE_KEYS = ("description", "gpu_policy", "axes", "include", "load", "limits", "recommend", "goals", "finalists")


def _from_table(settings: type, table: object, section: str) -> Any:
    """A profile's [section] as `settings` (a dataclass): an unknown key is named, with the valid ones."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    valid = [f.name for f in dataclasses.fields(settings)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown [{section}] keys {unknown}; valid keys: {', '.join(valid)}")
    return settings(**{key: tuple(value) if isinstance(value, list) else value for key, value in table.items()})


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (matrix/run/profiles/NAME.toml) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text, name = path.read_text(), path.stem
    elif path.suffix == ".toml":
        raise ConfigError(f"profile file {name_or_path} does not exist; profiles: {', '.join(profile_names())}")
    else:
        if name_or_path not in profile_names():
            raise ConfigError(f"unknown profile {name_or_path!r}; "
                              f"profiles: {', '.join(profile_names())}, or a .toml path")
        text = (importlib_resources.files("forkwise.matrix.run") / "profiles" / f"{name_or_path}.toml").read_text()
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
        goals = _from_table(GoalSettings, data.get("goals", {}), "goals")
        finalists = _from_table(FinalistSettings, data.get("finalists", {}), "finalists")
    except ConfigError as exc:
        raise ConfigError(f"profile {name}: {exc}") from None
    policy = gpu.check_choice(f"profile {name}: gpu_policy", data.get("gpu_policy", gpu.DEFAULT_GPU_POLICY),
                              gpu.GPU_POLICIES)
    if policy == "fraction" and any(c.device == "gpu" and c.backend != "jax" for c in unique):
        raise ConfigError(f"profile {name}: gpu_policy 'fraction' applies to the jax backend only; use 'grow'")
    recommend = Budgets.from_table(data.get("recommend", {}), f"profile {name}")
    return Profile(name=name, description=data.get("description", ""), cells=tuple(unique), load=load,
                   limits=limits, gpu_policy=policy, recommend=recommend, goals=goals,
                   finalists=finalists)


def parse_only(items: list[str]) -> dict[str, set[str]]:
    """['strategy=lazy,server=uwsgi', 'workers=2'] -> {'strategy': {'lazy'}, ...}."""
    only: dict[str, set[str]] = {}
    for item in items:
        current = None
        for part in item.split(","):
            if "=" in part:
                current, value = (x.strip() for x in part.split("=", 1))
                if current not in axis_names():
                    raise ConfigError(f"--only: unknown axis {current!r}; axes are {', '.join(axis_names())}")
            elif current is None:
                raise ConfigError(f"--only: expected AXIS=VALUE, got {part!r}")
            else:
                value = part.strip()
            only.setdefault(current, set()).add(value)
    return only
