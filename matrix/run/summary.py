"""One line per cell on stderr as a run goes (``forkwise cell``, the matrix runner): its verdict,
cold start, verification and each load level."""

from __future__ import annotations

from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.types import CellRecord


def summary_line(record: CellRecord) -> str:
    cold = f"{record.cold_start_s:.1f}s" if record.cold_start_s is not None else "-"
    scenario = "" if record.scenario == STEADY else f" {record.scenario:<17}"
    scenario += f" [{record.database_setting}]" if record.database_setting else ""
    scenario += f" [threads {record.runtime_threads}]" if record.runtime_threads != "default" else ""
    text = (f"{record.strategy:<22} {record.server:<17} w{record.workers}{scenario}  {record.verdict.value:<5} "
            f"cold {cold:>6}  ok {record.ok}/{record.requests}  rows {record.rows_found}/{record.rows_expected}")
    for level in record.load:
        text += f"  c{level.concurrency}: {level.rps:.0f} rps p99 {level.latency.p99_ms:.1f} ms"
    if record.open_loop is not None:
        best = record.open_loop.max_rate_rps
        text += (f"  open loop: {'none' if best is None else f'{best:.0f} req/s'} "
                 f"within p99 {record.open_loop.p99_budget_ms:g} ms")
    served = record.model_server
    if served is not None and served.rows_per_call is not None:
        text += f"  model server: {served.calls} calls, {served.rows_per_call:.1f} rows a call"
    if not record.verdict.ok and record.evidence.findings:
        text += f"\n    {record.evidence.findings[0]}"
    return text

