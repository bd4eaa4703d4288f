"""The control of a cell: the one rule that report, compare and goals share.

A cell's control is the record, from the same run, of a strategy that answers without the
model (``Strategy.serves_model`` is False: the ``control`` ceiling) on the same request path:
every axis ``Axis.shared_by_peers`` marks (server and requests in flight, workers, model, device,
backend, database). A JAX cell is never divided by a torch control: a cell with no
control of its own backend has none. Within those, the control of the same scenario is taken,
else the steady one (a reliability scenario without its own control is shown against the
ceiling of undisturbed load).

Which strategy is a control comes from its class, never from its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from forkwise.matrix.records.axes import STEADY, axes
from forkwise.matrix.records.types import CellRecord, LoadLevel
from forkwise.strategies import registry

ControlKey = tuple  # the values of the axes shared by peers, in declared order


@cache
def is_control(strategy: str) -> bool:
    """True for a strategy whose class answers without the model. A strategy not installed on
    this host (a record made elsewhere) cannot be known to be one, so it is not."""
    return strategy in registry.names() and not registry.get(strategy).serves_model


def control_key(record: CellRecord) -> ControlKey:
    """What a cell and its control share: every axis on the request path (``Axis.shared_by_peers``:
    the server setting and its requests in flight, workers, model, device, backend, database)."""
    return tuple(getattr(record, axis.name) for axis in axes() if axis.shared_by_peers)


def peer(record: CellRecord, strategy: str, run: Iterable[CellRecord]) -> CellRecord | None:
    """The cell of `strategy` that `record` is compared with in its run: the same control key and
    scenario (a goal's lazy or unbatched counterpart)."""
    found = [r for r in run if r.strategy == strategy and r.scenario == record.scenario
             and control_key(r) == control_key(record)]
    return found[-1] if found else None


@dataclass(frozen=True)
class Controls:
    """The control records of one run, by control_key and scenario."""

    by_key: dict[ControlKey, dict[str, CellRecord]]

    @classmethod
    def of_run(cls, records: Iterable[CellRecord]) -> Controls:
        """Index one run's records (combined, one per cell); the control records among them."""
        by_key: dict[ControlKey, dict[str, CellRecord]] = {}
        for record in records:
            if is_control(record.strategy):
                by_key.setdefault(control_key(record), {})[record.scenario] = record
        return cls(by_key)

    def control_for(self, record: CellRecord) -> CellRecord | None:
        """The control of ``record`` in this run: same scenario first, else the steady one; None
        when the run has none on the same request path (``control_key``)."""
        scenarios = self.by_key.get(control_key(record), {})
        return scenarios.get(record.scenario) or scenarios.get(STEADY)

    def control_level(self, record: CellRecord, concurrency: int) -> LoadLevel | None:
        """The control's load level at ``concurrency``, when the control is OK and measured it."""
        control = self.control_for(record)
        if control is None or not control.verdict.ok:
            return None
        return next((lv for lv in control.load if lv.concurrency == concurrency and lv.rps > 0), None)


def control_for(record: CellRecord, run: Iterable[CellRecord]) -> CellRecord | None:
    """The control of ``record`` among the records of its own run (see Controls for many lookups)."""
    return Controls.of_run(run).control_for(record)
