"""What a team asks of a deployment: a p99 budget and a memory budget, and where each was set
(default, profile or command line). The recommendation (``analysis.recommend``) answers within them;
profiles, the CLI and run.json carry them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forkwise.errors import ConfigError

DEFAULT_P99_MS = 100.0  # a common service-level objective for an interactive endpoint
DEFAULT_MEMORY_MB: float | None = None  # no memory budget unless one is set
DEFAULT = "default"


@dataclass(frozen=True)
class Budgets:
    """What a team asks of a deployment, and where each budget was set (default, profile or
    command line), so the report can say it."""

    p99_ms: float = DEFAULT_P99_MS
    memory_mb: float | None = DEFAULT_MEMORY_MB  # total PSS of the deployment; None: no budget
    p99_from: str = DEFAULT
    memory_from: str = DEFAULT

    def __post_init__(self) -> None:
        for name in ("p99_ms", "memory_mb"):
            value = getattr(self, name)
            if value is None and name == "memory_mb":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"recommend.{name} must be a number > 0; got {value!r}")

    @classmethod
    def from_table(cls, table: Any, where: str) -> Budgets:
        """A profile's [recommend] table: p99_ms and memory_mb, each optional."""
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [recommend] must be a table")
        unknown = set(table) - {"p99_ms", "memory_mb"}
        if unknown:
            raise ConfigError(f"{where}: unknown [recommend] keys {sorted(unknown)}; keys are p99_ms, memory_mb")
        return cls().overridden(table.get("p99_ms"), table.get("memory_mb"), where)

    def overridden(self, p99_ms: float | None, memory_mb: float | None, source: str) -> Budgets:
        """These budgets with the ones given (not None) set by `source`."""
        return Budgets(
            p99_ms=self.p99_ms if p99_ms is None else p99_ms,
            memory_mb=self.memory_mb if memory_mb is None else memory_mb,
            p99_from=self.p99_from if p99_ms is None else source,
            memory_from=self.memory_from if memory_mb is None else source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"p99_ms": self.p99_ms, "memory_mb": self.memory_mb, "p99_from": self.p99_from,
                "memory_from": self.memory_from}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budgets:
        """What a run.json says (an older run says nothing: the defaults)."""
        return cls(**(data or {}))

    def describe(self) -> str:
        memory = ("no memory budget" if self.memory_mb is None
                  else f"total PSS at most {self.memory_mb:,g} MB")
        return (f"p99 latency at most {self.p99_ms:,g} ms (set by: {self.p99_from}) and {memory} "
                f"(set by: {self.memory_from})")
