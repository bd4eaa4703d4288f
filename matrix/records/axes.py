"""A cell's axes, declared once: what a cell of the matrix is.

Each axis is one ``Axis`` in ``AXES``: its name (the one spelling everywhere: the profile's key,
the plan's JSON key and field, ``--only``'s name, the record's field, the report's column key),
its kind and default, its check, its help, its report label, how the cell id shows it and whether
it is a setting of the deployment itself (``forkwise serve`` takes those). Profile parsing, the
cell's plan and its flags, the cell id, the record's fields and schema and the report's axis
columns are all derived from ``AXES`` (read through ``axes()``), so adding an axis is one ``Axis``
here plus the code where it acts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from forkwise import checks, gpu
from forkwise.checks import BOOL, INT, LABEL_OR_COUNT, TEXT, Check, Kind
from forkwise.config import DATABASES, DB_RESET_POLICIES, DEFAULT_DATABASE, DEFAULT_DB_RESET, THREAD_LABELS
from forkwise.errors import ConfigError
from forkwise.servers.base import DEFAULT_WORKERS

REQUIRED: Any = object()  # the default of an axis every cell must name
STEADY = "steady"  # the scenario without a disruption: the default of the scenario axis


def _strategy_names() -> list[str]:
    from forkwise.strategies import registry

    return registry.names()


def _server_names() -> list[str]:
    from forkwise import servers

    return servers.names()


def _model_name(value: Any) -> None:
    from forkwise.model.spec import BUILTIN_MODELS

    if value not in BUILTIN_MODELS and not str(value).endswith(".keras"):
        raise ValueError(f"{value!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .keras path")


@dataclass(frozen=True)
class Axis:
    """One axis of the matrix, declared."""

    name: str
    help: str
    kind: Kind
    default: Any = REQUIRED
    check: Check | None = None  # a value's check; registries' names are checked when asked, not at import
    label: str = ""  # the report's column header ("" : the name, underscores as spaces)
    # How the cell id shows a value (None: not at all); `id_always`: even at the default.
    id_part: Callable[[Any], str] | None = str
    id_always: bool = False
    # How a run's verdict matrices describe a value ("" leaves it out: the default says nothing).
    describe: Callable[[Any], str] = lambda value: ""
    deployment: bool = True  # a setting of the deployment itself (`forkwise serve` takes it)
    # Whether a cell and the cell it is compared with (its control, its lazy or unbatched peer) share
    # this axis's value: what sits on the request path does; the strategy and what only a model-
    # loading process or a preloaded master feels do not (matrix.analysis.controls).
    shared_by_peers: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def column(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def read(self, value: Any, where: str) -> Any:
        """A value from a profile or a plan's JSON, as the axis's kind (no text parsed), checked."""
        try:
            value = self.kind.load(value)
            if self.check is not None:
                self.check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: axis {self.name}: {exc}") from None
        return value


def _unless(default: Any, text: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: "" if value == default else text(value)


AXES: tuple[Axis, ...] = (
    Axis("strategy", "the fork strategy (forkwise strategies)", TEXT, check=checks.one_of(_strategy_names),
         id_always=True, shared_by_peers=False),
    Axis("server", "the server setting (forkwise strategies)", TEXT, check=checks.one_of(_server_names),
         id_always=True),
    Axis("workers", "worker processes", INT, DEFAULT_WORKERS, checks.above(1, inclusive=True),
         id_part=lambda v: f"w{v}", id_always=True, describe=lambda v: f"{v} workers"),
    Axis("model", "a built-in model (default, large, tiny, cnn, text) or the path of your own .keras file", TEXT,
         "default", _model_name, id_always=True, describe=lambda v: f"model {v}"),
    Axis("device", "cpu hides every GPU from the deployment; gpu needs an NVIDIA GPU", TEXT, gpu.DEFAULT_DEVICE,
         checks.one_of(gpu.DEVICES), id_always=True, describe=lambda v: f"device {v}"),
    Axis("backend", "the Keras backend serving the model (jax and torch: pip install 'forkwise[jax]' / '[torch]')",
         TEXT, gpu.DEFAULT_BACKEND, checks.one_of(gpu.BACKENDS),
         describe=_unless(gpu.DEFAULT_BACKEND, lambda v: f"backend {v}")),
    Axis("database", "sqlite: a file in the run directory; postgresql: a PostgreSQL server of the deployment's own "
         "(from the system packages), over loopback TCP with TLS; postgresql-unix: the same over its Unix socket",
         TEXT, DEFAULT_DATABASE, checks.one_of(DATABASES),
         describe=_unless(DEFAULT_DATABASE, lambda v: f"database {v}")),
    Axis("db_reset", "what each forked worker does with a database engine its master made: its own new engine, "
         "dispose(close=False), a NullPool, or none (the inherited pool: the hazard)", TEXT, DEFAULT_DB_RESET,
         checks.one_of(DB_RESET_POLICIES), label="db reset", id_part=lambda v: f"reset-{v}",
         describe=_unless(DEFAULT_DB_RESET, lambda v: f"reset {v}"), shared_by_peers=False),
    Axis("db_in_master", "the app queries the database in the master before fork (only a preloaded app has one)",
         BOOL, False, label="db in master", id_part=lambda v: "db-in-master",
         describe=_unless(False, lambda v: "queried in the master"), shared_by_peers=False),
    Axis("runtime_threads", "the runtime's intra-op threads in each process that loads the model: default (the "
         "runtime's), per-worker (the cores shared out among the workers), or a number", LABEL_OR_COUNT, "default",
         checks.label_or_count(THREAD_LABELS), label="runtime threads", id_part=lambda v: f"threads-{v}",
         describe=_unless("default", lambda v: f"runtime threads {v}"), shared_by_peers=False),
    # 0 keeps every cell made before this axis existed as it was (its id, its record).
    Axis("in_flight", "requests in flight per worker: threads per worker for the threaded server settings, "
         "greenlets (worker_connections) for gevent; 0: the server setting's own (forkwise strategies)",
         INT, 0, checks.above(0, inclusive=True), label="in flight", id_part=lambda v: f"inflight-{v}",
         describe=_unless(0, lambda v: f"{v} in flight per worker")),
    # Last: the cell id ends with it.
    Axis("scenario", "a reliability scenario: steady, kill-worker, kill-model-server, reload, recycle, "
         "db-contention, bad-input, soak, restart-database (--database postgresql)", TEXT, STEADY, id_always=True,
         describe=lambda v: f"scenario {v}", deployment=False, shared_by_peers=False),
)


def axes() -> tuple[Axis, ...]:
    """Every axis, in declared order (read at each call: a test may declare one more)."""
    return AXES


def axis_names() -> tuple[str, ...]:
    return tuple(a.name for a in axes())


def axis(name: str) -> Axis:
    for one in axes():
        if one.name == name:
            return one
    raise ConfigError(f"unknown axis {name!r}; axes are {', '.join(axis_names())}")


def cell_id(values: Mapping[str, Any]) -> str:
    """A cell's stable identity, what ``--resume`` and ``compare`` match on: every axis the id shows,
    in declared order; an axis at its default only when it is always shown, so the ids of cells
    made before an axis existed stay as they were."""
    parts = []
    for one in axes():
        value = values[one.name]
        if one.id_part is not None and (one.id_always or value != one.default):
            parts.append(one.id_part(value))
    return "/".join(parts)


class Cell:
    """One cell of the matrix: a value for every axis, as its kind; frozen, and equal cells hash alike.

    The values are checked as kinds only: a record of a strategy this checkout lacks still reads.
    Names and choices are checked where a cell is asked for (``Axis.read``: profiles, flags)."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(axis_names()))
        if unknown:
            raise ConfigError(f"unknown axes {unknown}; axes are {', '.join(axis_names())}")
        resolved = {}
        for one in axes():
            if one.name in values:
                resolved[one.name] = _as_kind(one, values[one.name])
            elif one.required:
                raise ConfigError(f"a cell needs axis {one.name!r}")
            else:
                resolved[one.name] = one.default
        object.__setattr__(self, "_values", resolved)

    def __getattr__(self, name: str) -> Any:
        if name == "_values":  # not set yet (a failed __init__, a copy): no axes to look in
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Cell is frozen: use replace({name}=...)")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"Cell({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __reduce__(self) -> tuple:
        return (_cell_from_dict, (dict(self._values),))

    @property
    def id(self) -> str:
        return cell_id(self._values)

    def replace(self, **changes: Any) -> Cell:
        return Cell(**{**self._values, **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, by axis name."""
        return {one.name: one.kind.dump(self._values[one.name]) for one in axes()}


def _cell_from_dict(values: dict[str, Any]) -> Cell:
    return Cell(**values)


def _as_kind(one: Axis, value: Any) -> Any:
    try:
        return one.kind.coerce(value)
    except ValueError as exc:
        raise ConfigError(f"axis {one.name}: {exc}") from None


def describe(cell: Cell, leave_out: tuple[str, ...] = ("strategy", "server")) -> str:
    """What a verdict matrix holds fixed, in words: "2 workers, model default, device cpu, scenario steady"."""
    return ", ".join(text for one in axes() if one.name not in leave_out for text in [one.describe(cell[one.name])]
                     if text)


class WithAxes:
    """For a frozen dataclass with a ``cell: Cell`` field (a record, a plan): its axes read as
    attributes (``record.strategy``), and it is made and changed with axes beside its own fields."""

    cell: Cell

    def __getattr__(self, name: str) -> Any:
        if name == "cell":  # not set yet (a copy being made): no axes to look in
            raise AttributeError(name)
        try:
            return self.cell[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field or axis {name!r}") from None

    @classmethod
    def of(cls, **values: Any) -> Any:
        """One made from axes and its own fields given side by side (``CellRecord.of(strategy="lazy", ...)``)."""
        names = axis_names()
        return cls(cell=Cell(**{k: v for k, v in values.items() if k in names}),  # type: ignore[call-arg]
                   **{k: v for k, v in values.items() if k not in names})

    def with_axes(self, **changes: Any) -> Any:
        """A copy with some axes changed."""
        return dataclasses.replace(self, cell=self.cell.replace(**changes))  # type: ignore[type-var]
