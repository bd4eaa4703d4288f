"""What the phases a cell calls (its scenarios, its load) use of the cell that runs them
(``cell.CellRun`` is one): they are called by the cell, so they name what they need here rather
than import the cell."""

from __future__ import annotations

from typing import Any, Protocol

from forkwise.matrix.records.types import LoadLevel


class RunningCell(Protocol):
    cell: Any  # the cell's plan (matrix.run.plan.CellPlan)
    launch: Any  # the running deployment (its group, its host and port), once launched
    database: Any  # the deployment's database (a server for restart-database)
    findings: list[str]
    timings: dict[str, float]
    progress: Any  # the deployment's progress watch, or None
    load_levels: tuple[LoadLevel, ...]

    @property
    def launched(self) -> Any: ...  # the running deployment, asserted to be there

    @property
    def patience_s(self) -> float: ...

    def still_computing(self, slice_s: float) -> bool: ...  # keep waiting for an answer? (run.progress)

    def enter(self, phase: str) -> None: ...
