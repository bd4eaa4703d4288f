"""The flat table of a run (publishing): one row per (cell, concurrency level) plus one per cell
without load. The columns are declared once, in ``columns()`` (the axes' from their declaration):
results.csv writes their raw values, the Markdown and HTML tables show chosen columns (views) through
each column's formatter;
results.json is the records themselves (``CellRecord.to_dict``), so ``read_records`` reads it back.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from forkwise.checks import INT
from forkwise.matrix.analysis.controls import Controls
from forkwise.matrix.analysis.launches import launch_noise
from forkwise.matrix.publish.document import MISSING, Table, fmt_fixed, fmt_int, fmt_ms, fmt_ratio, fmt_spread, fmt_text
from forkwise.matrix.records.axes import Axis, axes
from forkwise.matrix.records.roles import MASTER, MODEL_SERVER, SUPERVISOR, WORKER
from forkwise.matrix.records.run_info import RunInfo
from forkwise.matrix.records.types import SCHEMA_VERSION, CellRecord, LoadLevel, Verdict

# --- the control cell each cell is compared with -------------------------------------------


def ratio_to_control(level: LoadLevel | None, control_level: LoadLevel | None) -> float | None:
    if level is None or control_level is None or control_level.rps <= 0:
        return None
    return level.rps / control_level.rps


# --- the flat table: columns declared once -------------------------------------------------


@dataclass(frozen=True)
class RowSource:
    """What one flat row is made from."""

    record: CellRecord
    level: LoadLevel | None
    control_level: LoadLevel | None



@dataclass(frozen=True)
class Column:
    key: str  # CSV header and row-dict key
    title: str  # table heading
    get: Callable[[RowSource], Any]  # the raw value (number, str, Verdict or None)
    fmt: Callable[[Any], str] = fmt_text  # how a table shows it


def _lv(attr: str) -> Callable[[RowSource], Any]:
    return lambda s: None if s.level is None else getattr(s.level, attr)


def _lat(attr: str) -> Callable[[RowSource], Any]:
    return lambda s: None if s.level is None else getattr(s.level.latency, attr)


def _mem(attr: str) -> Callable[[RowSource], Any]:
    return lambda s: None if s.record.memory is None else getattr(s.record.memory, attr)


def _role_count(role: str) -> Callable[[RowSource], Any]:
    def get(s: RowSource) -> int | None:
        if s.record.memory is None:
            return None
        return sum(1 for p in s.record.memory.processes if p.role == role)

    return get


def axis_columns() -> tuple[Column, ...]:
    """One column per axis of the cell (``matrix.records.axes``), in declared order."""
    return tuple(Column(a.name, a.column, _axis(a.name), fmt_int if a.kind is INT else fmt_text) for a in axes())


def _axis(name: str) -> Callable[[RowSource], Any]:
    return lambda s: s.record.cell[name]


def columns() -> tuple[Column, ...]:
    """Every column: the cell, its axes (as declared now: a test may declare one more), the rest."""
    return tuple(_columns_by_key().values())


def column(key: str) -> Column:
    return _columns_by_key()[key]


# The columns built for one declaration of the axes: (that declaration, key -> column). Tables ask
# for a column per shown value, so they are built once per declaration, not once per value.
_BUILT: list[tuple[tuple[Axis, ...], dict[str, Column]]] = []


def _columns_by_key() -> dict[str, Column]:
    declared = axes()
    if not _BUILT or _BUILT[0][0] is not declared:
        every = (Column("cell_id", "cell", lambda s: s.record.cell_id), *axis_columns(), *MEASURE_COLUMNS)
        _BUILT[:] = [(declared, {c.key: c for c in every})]
    return _BUILT[0][1]


MEASURE_COLUMNS: tuple[Column, ...] = (
    Column("threads", "threads", lambda s: s.record.threads, fmt_int),  # the server setting's, per worker
    Column("db_connections_peak", "db connections peak", lambda s: s.record.db_connections_peak, fmt_int),
    Column("verdict", "verdict", lambda s: s.record.verdict),
    Column("concurrency", "concurrency", _lv("concurrency"), fmt_int),
    Column("level_duration_s", "level s", _lv("duration_s"), fmt_fixed(1)),
    Column("level_requests", "requests", _lv("requests"), fmt_int),
    Column("rps", "rps", _lv("rps"), fmt_fixed(1)),
    Column("rps_stdev", "rps stdev", _lv("rps_stdev"), fmt_fixed(1)),
    Column("rps_sample_count", "rps samples", lambda s: None if s.level is None else len(s.level.rps_samples),
           fmt_int),
    Column("launches", "launches", lambda s: s.record.launches, fmt_int),
    Column("launch_rps", "rps per launch", lambda s: None if s.level is None else
           " ".join(f"{x:.1f}" for x in s.level.launch_rps) or None),
    Column("host_slowdown", "host slowdown", _lv("host_slowdown"), fmt_fixed(2)),
    Column("launches_slow", "launches in a slow spell", _lv("launches_slow"), fmt_int),
    Column("ratio_to_control", "vs control", lambda s: ratio_to_control(s.level, s.control_level), fmt_ratio),
    Column("p50_ms", "p50 ms", _lat("p50_ms"), fmt_ms),
    Column("p90_ms", "p90 ms", _lat("p90_ms"), fmt_ms),
    Column("p99_ms", "p99 ms", _lat("p99_ms"), fmt_ms),
    Column("max_ms", "max ms", _lat("max_ms"), fmt_ms),
    Column("mean_ms", "mean ms", _lat("mean_ms"), fmt_ms),
    Column("errors", "errors", lambda s: None if s.level is None else s.level.errors.total, fmt_int),
    Column("errors_timeout", "timeouts", lambda s: None if s.level is None else s.level.errors.timeout, fmt_int),
    Column("errors_5xx", "5xx", lambda s: None if s.level is None else s.level.errors.http_5xx, fmt_int),
    Column("rows_expected", "rows expected", _lv("rows_expected"), fmt_int),
    Column("rows_found", "rows found", _lv("rows_found"), fmt_int),
    Column("rows_lost", "rows lost", _lv("rows_lost"), fmt_int),
    Column("sampled", "sampled", _lv("sampled"), fmt_int),
    Column("sampled_wrong", "sampled wrong", _lv("sampled_wrong"), fmt_int),
    Column("driver", "driver", _lv("driver")),
    Column("driver_cpu_s", "driver CPU s", _lv("driver_cpu_s"), fmt_fixed(1)),
    Column("server_cpu_s", "server CPU s", _lv("server_cpu_s"), fmt_fixed(1)),
    Column("cold_start_s", "cold start s", lambda s: s.record.cold_start_s, fmt_fixed(2)),
    Column("warm_all_s", "all warm s", lambda s: s.record.warm_all_s, fmt_fixed(2)),
    Column("total_pss_mb", "PSS MB", _mem("total_pss_mb"), fmt_fixed(1)),
    Column("total_uss_mb", "USS MB", _mem("total_uss_mb"), fmt_fixed(1)),
    Column("total_rss_mb", "RSS MB", _mem("total_rss_mb"), fmt_fixed(1)),
    Column("total_gpu_mb", "GPU MB", _mem("total_gpu_mb"), fmt_fixed(1)),
    Column("master_processes", "masters", _role_count(MASTER), fmt_int),
    Column("worker_processes", "workers seen", _role_count(WORKER), fmt_int),
    Column("model_server_processes", "model servers", _role_count(MODEL_SERVER), fmt_int),
    Column("supervisor_processes", "supervisors", _role_count(SUPERVISOR), fmt_int),
    Column("verify_requests", "verify requests", lambda s: s.record.requests, fmt_int),
    Column("verify_ok", "verify ok", lambda s: s.record.ok, fmt_int),
    Column("verify_errors", "verify errors", lambda s: s.record.errors.total, fmt_int),
    Column(
        "verify_rows_lost",
        "verify rows lost",
        lambda s: max(0, s.record.rows_expected - s.record.rows_found),
        fmt_int,
    ),
    Column("cell_duration_s", "cell s", lambda s: s.record.duration_s, fmt_fixed(1)),
)


def row_sources(records: Sequence[CellRecord]) -> list[RowSource]:
    """One source per (cell, concurrency level), and one per cell that has no load."""
    controls = Controls.of_run(records)
    sources = []
    for record in records:
        if not record.load:
            sources.append(RowSource(record, None, None))
        for level in sorted(record.load, key=lambda lv: lv.concurrency):
            sources.append(RowSource(record, level, controls.control_level(record, level.concurrency)))
    return sources


def table_rows(records: Sequence[CellRecord]) -> list[dict[str, Any]]:
    """The flat table every tabular format shows: raw values keyed by column key."""
    return [{c.key: c.get(src) for c in columns()} for src in row_sources(records)]


def show(key: str, row: dict[str, Any]) -> str:
    """A row's value as a table shows it."""
    return column(key).fmt(row[key])


# --- results.csv and results.json ----------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Verdict):
        return value.value
    return value  # numbers stay plain numbers (csv writes repr-exact floats)


def render_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in columns()])
    for row in rows:
        writer.writerow([_csv_value(row[c.key]) for c in columns()])
    return buf.getvalue()


def render_json(records: Sequence[CellRecord], profile: str, run_info: RunInfo) -> str:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "run": run_info.to_dict(),
        "environment": records[0].to_dict()["environment"] if records else None,
        # concurrency -> relative stdev of rps between launches of a cell, pooled over the OK cells
        "launch_noise": {str(c): v for c, v in launch_noise(records).items()},
        "records": [r.to_dict() for r in records],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"




# --- views: the columns a table of the report shows ------------------------------------


# (c) throughput and latency


View = tuple[tuple[str, Callable[[dict[str, Any]], str]], ...]


def col(key: str) -> tuple[str, Callable[[dict[str, Any]], str]]:
    return (column(key).title, lambda row: show(key, row))


def _rps_with_stdev(row: dict[str, Any]) -> str:
    return fmt_spread(row["rps"], row["rps_stdev"], row["rps_sample_count"])


LOAD_VIEW: View = (
    col("cell_id"),
    col("concurrency"),
    ("rps ± stdev", _rps_with_stdev),
    col("ratio_to_control"),
    col("p50_ms"),
    col("p99_ms"),
    col("errors"),
    col("rows_lost"),
)


def _process_breakdown(row: dict[str, Any]) -> str:
    parts = [
        f"{row[key]} {label}"
        for key, label in (
            ("master_processes", MASTER),
            ("worker_processes", WORKER),
            ("model_server_processes", MODEL_SERVER),
            ("supervisor_processes", SUPERVISOR),
        )
        if row[key]
    ]
    return " + ".join(parts) or MISSING


MEMORY_VIEW: View = (
    col("cell_id"),
    col("verdict"),
    col("total_pss_mb"),
    col("total_uss_mb"),
    col("total_rss_mb"),
    col("total_gpu_mb"),
    ("processes", _process_breakdown),
    col("cold_start_s"),
    col("warm_all_s"),
)


def view_table(view: View, rows: Iterable[dict[str, Any]]) -> Table:
    return Table(tuple(title for title, _ in view), tuple(tuple(render(row) for _, render in view) for row in rows))


def ok_load_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["verdict"] is Verdict.OK and r["concurrency"] is not None]


def one_row_per_cell(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["cell_id"], row)
    return list(seen.values())

