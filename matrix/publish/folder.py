"""Publish a run folder from its records: the report of one host, or of a merged folder (one
section per host)."""

from __future__ import annotations

from pathlib import Path

from forkwise.errors import RecordError
from forkwise.matrix.publish.hosts import report_merged
from forkwise.matrix.publish.report import write_report
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.jsonl import RECORDS_FILE, read_records
from forkwise.matrix.records.run_info import saved_run_info


def report_dir(out: Path, run_info: dict | None = None, p99_ms: float | None = None,
               memory_mb: float | None = None) -> list[Path]:
    """Publish the run in `out` from its records (every launch, as measured); the budgets of the
    recommendation are the run's (run.json), with `p99_ms` and `memory_mb` set on the command line."""
    if "hosts" in saved_run_info(out):  # a folder `forkwise merge` wrote: one section per host
        return report_merged(Path(out), p99_ms=p99_ms, memory_mb=memory_mb)
    records_path = Path(out) / RECORDS_FILE
    records = list(read_records(records_path))
    if not records:
        raise RecordError(f"{records_path} holds no records")
    info = run_info or saved_run_info(out)
    if p99_ms is not None or memory_mb is not None:
        budgets = Budgets.from_dict(info.get("recommend")).overridden(p99_ms, memory_mb, "command line")
        info = {**info, "recommend": budgets.to_dict()}
    return write_report(records, Path(out), info.get("profile", Path(out).name), info)
