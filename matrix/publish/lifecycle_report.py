"""RESULTS.md's lifecycle table: per cell, when /readyz said ready against when the deployment
answered, and what it said through a disruption against what the load got (matrix.run.readiness);
for a disrupted cell, what the event cost (failed requests, the longest stretch without a 200)."""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.matrix.analysis.ordering import cell_order, latest_by_cell
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table, fmt_fixed, fmt_int
from forkwise.matrix.records.types import CellRecord

HEADERS = ("cell", "verdict", "ready after s", "cold start s", "ready early s", "ready late s",
           "ready while failing s", "not ready while serving s", "longest lie s", "failed requests", "longest gap s")


def _seconds(value: float | None) -> str:
    return MISSING if value is None else fmt_fixed(2)(value)


def lifecycle_section(records: Sequence[CellRecord]) -> list[Block]:
    cells = [r for r in latest_by_cell(records).values() if r.readiness is not None]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.scenario, *cell_order(r)))
    rows = []
    for r in cells:
        boot, d = r.readiness, r.disruption
        assert boot is not None  # kept above only with one
        window = d.readiness if d is not None else None
        rows.append((
            r.cell_id, r.verdict.value, _seconds(boot.ready_after_s), _seconds(r.cold_start_s),
            _seconds(boot.ready_early_s), _seconds(boot.ready_late_s),
            _seconds(window.ready_while_failing_s) if window else MISSING,
            _seconds(window.not_ready_while_serving_s) if window else MISSING,
            _seconds(window.longest_lie_s) if window else MISSING,
            fmt_int(d.failed.total + d.unacknowledged) if d else MISSING,
            _seconds(d.longest_stall_s) if d else MISSING,
        ))
    return [
        Heading("Lifecycle"),
        Para("GET /readyz polled every 0.1 s (its timeout: the cell's request timeout) from launch to the end of "
             "verification, and through a disruption's window, beside the real requests. Ready early: it said "
             "ready while a request sent after that still failed; ready late: a request was answered correctly "
             "before it said ready. In a disruption's window, each 0.25 s interval's polls against whether the "
             "load got a single 200 in it. A cell fails (ERROR) when it said ready early by more than the probes "
             "resolve, or lied longer than its recovery allowance. Failed requests: the window's failures and "
             "requests never answered; longest gap: the longest stretch without a 200."),
        Table(HEADERS, tuple(rows)),
    ]
