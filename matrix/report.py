"""Publish a run: RESULTS.md, results.csv, results.json and results.html from the same records.

One path per format, and the numbers are formatted only when rendered:

- ``table_rows`` flattens the records into one row per (cell, concurrency level) plus one row per
  cell without load. The columns are declared once, in ``COLUMNS``; results.csv writes them raw,
  the Markdown and HTML tables show chosen columns through each column's formatter.
- ``build_document`` turns records into a list of blocks (``forkwise.matrix.document``);
  ``render_markdown`` and ``render_html`` each render that one document.
- results.json is the records themselves (``CellRecord.to_dict``), so ``read_records`` reads it back.

Every conclusion the report states (the article's three cases: ``article``; the recommendation:
``recommend``; the performance goals: ``goals``) is computed from the records of this run;
nothing is written in ahead of the data, and nothing measured on another machine is passed off
as this run's.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from forkwise.matrix.article import article_section
from forkwise.matrix.controls import Controls
from forkwise.matrix.database_report import database_section
from forkwise.matrix.document import (  # noqa: F401  (render_markdown, render_html: the renderers, re-exported)
    MISSING, SERVER_ORDER, STRATEGY_ORDER, Block, Code, Heading, Para, Table, combination, combination_label,
    combinations, fmt_fixed, fmt_int, fmt_mib, fmt_ms, fmt_ratio, fmt_spread, fmt_text, latest_by_cell, rank,
    render_html, render_markdown, servers_of, strategies_of,
)
from forkwise.matrix.goals import Bench, Profiles, goals_section, load_bench, load_profiles
from forkwise.matrix.launches import combine_all, describe_noise, launch_noise
from forkwise.matrix.plots import plot_section
from forkwise.matrix.recommend import Budgets, recommendation_section
from forkwise.matrix.records import HOST_SLOW_RATIO, SCHEMA_VERSION, CellRecord, LoadLevel, Verdict

LOG_TAIL_LINES = 10
FINDINGS_SHOWN = 3

REPORT_FILES = ("RESULTS.md", "results.csv", "results.json", "results.html")


# --- entry point ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What a report is made from: the records of every launch as measured, the same combined
    into one record per cell, and what the run says of itself (run.json)."""

    launches: tuple[CellRecord, ...]
    records: tuple[CellRecord, ...]
    profile: str
    info: dict

    @classmethod
    def of(cls, records: Iterable[CellRecord], profile: str, info: dict) -> "Run":
        launches = tuple(records)
        return cls(launches, tuple(combine_all(launches)), profile, info)

    @property
    def budgets(self) -> Budgets:
        return Budgets.from_dict(self.info.get("recommend"))


@dataclass(frozen=True)
class Extras:
    """Made by other commands than the run, found beside its folder: the goals section decides
    what of it to use (only what says it was made on the run's host)."""

    bench: Bench | None = None
    profiles: dict[str, Profiles] = field(default_factory=dict)


def write_report(records: list[CellRecord], out_dir: Path, profile: str, run_info: dict) -> list[Path]:
    """Write RESULTS.md, results.csv, results.json and results.html into out_dir; return their paths.

    `records`: every launch's record (records.jsonl) or records already combined (results.json).
    The micro-benchmarks and profiles live beside the run's folder (results/bench, results/profiles);
    the goals section uses them only where they say they come from this run's host."""
    run = Run.of(records, profile, run_info)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(run.records)
    extras = Extras(load_bench(out_dir.parent / "bench" / "benchmarks.json"), load_profiles(out_dir.parent / "profiles"))
    outputs = {
        "RESULTS.md": render_markdown(build_document(run, rows, extras, with_plots=False)),
        "results.csv": render_csv(rows),
        "results.json": render_json(run.records, profile, run_info),
        "results.html": render_html(build_document(run, rows, extras, with_plots=True), _title(profile)),
    }
    paths = []
    for name in REPORT_FILES:
        path = out_dir / name
        _write_atomically(path, outputs[name])
        paths.append(path)
    return paths


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _title(profile: str) -> str:
    return f"forkwise results: profile {profile}"

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


COLUMNS: tuple[Column, ...] = (
    Column("cell_id", "cell", lambda s: s.record.cell_id),
    Column("strategy", "strategy", lambda s: s.record.strategy),
    Column("server", "server", lambda s: s.record.server),
    Column("workers", "workers", lambda s: s.record.workers, fmt_int),
    Column("threads", "threads", lambda s: s.record.threads, fmt_int),
    Column("model", "model", lambda s: s.record.model),
    Column("device", "device", lambda s: s.record.device),
    Column("backend", "backend", lambda s: s.record.backend),
    Column("scenario", "scenario", lambda s: s.record.scenario),
    Column("database", "database", lambda s: s.record.database),
    Column("db_reset", "db reset", lambda s: s.record.db_reset),
    Column("db_in_master", "db in master", lambda s: s.record.db_in_master),
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
    Column("launches_set_aside", "launches set aside", _lv("launches_set_aside"), fmt_int),
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
    Column("master_processes", "masters", _role_count("master"), fmt_int),
    Column("worker_processes", "workers seen", _role_count("worker"), fmt_int),
    Column("model_server_processes", "model servers", _role_count("model-server"), fmt_int),
    Column("supervisor_processes", "supervisors", _role_count("supervisor"), fmt_int),
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
COLUMN = {c.key: c for c in COLUMNS}


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
    return [{c.key: c.get(src) for c in COLUMNS} for src in row_sources(records)]


def show(key: str, row: dict[str, Any]) -> str:
    """A row's value as a table shows it."""
    return COLUMN[key].fmt(row[key])


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
    writer.writerow([c.key for c in COLUMNS])
    for row in rows:
        writer.writerow([_csv_value(row[c.key]) for c in COLUMNS])
    return buf.getvalue()


def render_json(records: Sequence[CellRecord], profile: str, run_info: dict) -> str:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "run": run_info,
        "environment": records[0].to_dict()["environment"] if records else None,
        # concurrency -> relative stdev of rps between launches of a cell, pooled over the OK cells
        "launch_noise": {str(c): v for c, v in launch_noise(records).items()},
        "records": [r.to_dict() for r in records],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"



# --- the document ----------------------------------------------------------------------------


def build_document(run: Run, rows: Sequence[dict[str, Any]], extras: Extras, with_plots: bool) -> list[Block]:
    records = run.records
    blocks: list[Block] = [Heading(_title(run.profile), 1)]
    blocks += header_section(run)
    blocks += verdict_section(records)
    blocks += load_section(rows)
    blocks += memory_section(rows)
    blocks += gpu_memory_section(records)
    blocks += database_section(records)
    blocks += reliability_section(records)
    if with_plots:
        blocks += plot_section(records)
    blocks += failing_section(records)
    blocks += article_section(records)
    blocks += recommendation_section(records, run.budgets, with_plots)
    blocks += goals_section(records, extras.bench, extras.profiles)
    return blocks


# (a) header


def summarise(values: Sequence[str], unit: str = "records") -> str:
    """'f2e46e3 (44 records)', or each value with its count, the most common first, when they differ."""
    counts = Counter(values)
    if not counts:
        return MISSING
    return ", ".join(f"{value} ({n} {unit})" for value, n in counts.most_common())


def short_commit(commit: str) -> str:
    head, plus, rest = commit.partition("+")
    return (head[:7] if len(head) == 40 else head) + plus + rest


def packages_summary(records: Sequence[CellRecord]) -> str:
    """Every package any record names: its version, or each version with its count when they differ."""
    names = sorted({name for r in records for name in r.environment.packages})
    parts = []
    for name in names:
        versions = [r.environment.packages.get(name, "absent") for r in records]
        if len(set(versions)) == 1:
            parts.append(f"{name} {versions[0]}")
        else:
            parts.append(f"{name} {summarise(versions)}")
    return ", ".join(parts) or MISSING


def environment_facts(records: Sequence[CellRecord]) -> list[tuple[str, str]]:
    """Where and with what the records were measured, summarised over every one of them."""
    envs = [r.environment for r in records]
    facts = [
        ("machine", summarise([f"{e.cpu_model}, {e.cores} cores, {e.memory_gb:g} GB memory" for e in envs])),
        ("python", summarise([e.python for e in envs])),
        ("platform", summarise([e.platform for e in envs])),
        ("git commit", summarise([short_commit(e.git_commit) for e in envs])),
        ("packages", packages_summary(records)),
    ]
    gpus = [f"{e.gpu_name}, driver {e.gpu_driver}" for e in envs if e.gpu_name]
    if gpus:
        facts.insert(1, ("GPU", summarise(gpus)))
    return facts


def header_facts(records: Sequence[CellRecord], profile: str, run_info: dict,
                 launches: Sequence[CellRecord] | None = None) -> list[tuple[str, str]]:
    """`records`: one per cell; `launches`: every launch's record, which the environment facts
    summarise (default: `records`)."""
    launches = records if launches is None else launches
    facts = [
        ("profile", profile),
        ("date", str(run_info.get("started_at") or (records[0].environment.date if records else MISSING))),
        ("run duration", fmt_duration(run_info.get("duration_s"))),
        ("load driver", str(run_info.get("driver") or _drivers_seen(records) or MISSING)),
        ("cells", str(len(latest_by_cell(records)))),
        ("launches per cell", _fmt_launches(records)),
        ("launch-to-launch noise", _fmt_noise(launch_noise(records))),
    ]
    if any(lv.host_slowdown for r in records for lv in r.load):
        facts.append(("host slow spells", _fmt_slow_spells(records, run_info)))
    if run_info.get("command"):
        facts.append(("command", str(run_info["command"])))
    if launches:
        facts += environment_facts(launches)
    return facts


def _fmt_slow_spells(records: Sequence[CellRecord], run_info: dict) -> str:
    levels = [lv for r in records for lv in r.load]
    set_aside = sum(lv.launches_set_aside for lv in levels)
    slow = sum(lv.host_slow for lv in levels)
    waited = run_info.get("quiet_wait_s")
    rebased = run_info.get("probe_rebased", 0)
    unprobed = sum(1 for lv in levels if not lv.host_slowdown)
    return (f"{set_aside} launch-levels measured while the CPU probe ran over {HOST_SLOW_RATIO}x its reference "
            f"were set aside (another launch of the level was not slow); {slow} of {len(levels)} levels were slow "
            "in every launch and are kept" + (f"; {waited:g} s spent waiting for a quiet host" if waited else "")
            + (f"; {unprobed} levels not probed (the deployment was still busy as long after the level as the "
               "level had lasted)" if unprobed else "")
            + (f"; the reference was re-based {rebased} times (every probe since the last was slower)"
               if rebased else ""))


def _fmt_launches(records: Sequence[CellRecord]) -> str:
    counts = sorted({r.launches for r in records})
    text = " or ".join(map(str, counts)) if counts else MISSING
    return text + (" (a cell that failed is not launched again)" if len(counts) > 1 else "")


def _fmt_noise(noise: dict[int, float]) -> str:
    """The run's pooled launch-to-launch spread of rps, per concurrency."""
    return describe_noise(noise) + (
        " relative stdev between launches of a cell (pooled over the OK cells)" if noise else "")


def _drivers_seen(records: Iterable[CellRecord]) -> str:
    return ", ".join(sorted({lv.driver for r in records for lv in r.load}))


def fmt_duration(seconds: Any) -> str:
    if seconds is None:
        return MISSING
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def header_section(run: Run) -> list[Block]:
    facts = header_facts(run.records, run.profile, run.info, run.launches)
    return [Table(("run", "value"), tuple((k, v) for k, v in facts))]


# (b) verdict matrix


def verdict_matrix(records: Sequence[CellRecord], combo: tuple) -> Table:
    """Rows: strategy; columns: server; cells: the verdict observed (last record wins)."""
    chosen = [r for r in records if combination(r) == combo]
    verdicts = {(r.strategy, r.server): r.verdict.value for r in chosen}
    servers = servers_of(chosen)
    rows = tuple(
        (strategy, *(verdicts.get((strategy, server), MISSING) for server in servers))
        for strategy in strategies_of(chosen)
    )
    return Table(("strategy", *servers), rows)


def verdict_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Verdict matrix")]
    combos = combinations(records)
    if not combos:
        return blocks + [Para("No cells were recorded.")]
    for combo in combos:
        if len(combos) > 1:
            blocks.append(Heading(combination_label(combo), 3))
        else:
            blocks.append(Para(combination_label(combo) + "."))
        blocks.append(verdict_matrix(records, combo))
    return blocks


# (c) throughput and latency


View = tuple[tuple[str, Callable[[dict[str, Any]], str]], ...]


def col(key: str) -> tuple[str, Callable[[dict[str, Any]], str]]:
    return (COLUMN[key].title, lambda row: show(key, row))


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
            ("master_processes", "master"),
            ("worker_processes", "worker"),
            ("model_server_processes", "model-server"),
            ("supervisor_processes", "supervisor"),
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


def load_section(rows: Sequence[dict[str, Any]]) -> list[Block]:
    blocks: list[Block] = [Heading("Throughput and latency per cell")]
    ok_rows = ok_load_rows(rows)
    if not ok_rows:
        return blocks + [Para("No OK cell has load data in this run.")]
    blocks.append(
        Para(
            "Closed-loop load; rps is the mean of the per-interval samples of every launch of the cell "
            "± their standard deviation (so the spread covers launch-to-launch noise); latency "
            "percentiles are each launch's, averaged weighted by requests; 'vs control' is the rps "
            "divided by the rps of its control (forkwise.matrix.controls: the same server, workers, model, "
            "device and backend) at the same concurrency in this run."
        )
    )
    return blocks + [view_table(LOAD_VIEW, ok_rows)]


# (d) memory and cold start


def memory_section(rows: Sequence[dict[str, Any]]) -> list[Block]:
    blocks: list[Block] = [Heading("Memory and cold start")]
    cells = [r for r in one_row_per_cell(rows) if r["total_pss_mb"] is not None or r["cold_start_s"] is not None]
    if not cells:
        return blocks + [Para("No cell recorded memory or a cold start.")]
    blocks.append(
        Para(
            "Totals over every process of the deployment (psutil); cold start: launch to the first "
            "correct answer; all warm: launch to every worker having answered correctly."
        )
    )
    return blocks + [view_table(MEMORY_VIEW, cells)]


ROLE_ORDER = ("master", "worker", "model-server", "supervisor", "helper")


def gpu_processes_text(record: CellRecord) -> str:
    """'master 0 · worker 107,988 · worker 34,314': GPU MiB of each process, master first."""
    procs = sorted(record.memory.processes, key=lambda p: (rank(p.role, ROLE_ORDER), p.pid))
    return " · ".join(f"{p.role} {fmt_mib(p.gpu_mb)}" for p in procs if p.gpu_mb is not None) or MISSING


def card_share(record: CellRecord) -> str:
    card = record.environment.gpu_memory_mb
    total = record.memory.total_gpu_mb
    if not card or total is None:
        return MISSING
    share = total / card
    return f"{share:.1%} of {fmt_mib(card)}" if share < 0.1 else f"{share:.0%} of {fmt_mib(card)}"


def gpu_memory_section(records: Sequence[CellRecord]) -> list[Block]:
    """GPU memory per process, for every GPU cell whose processes were measured (failing ones too)."""
    cells = [
        r for r in latest_by_cell(records).values()
        if r.device == "gpu" and r.memory and any(p.gpu_mb is not None for p in r.memory.processes)
    ]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.backend, rank(r.strategy, STRATEGY_ORDER), rank(r.server, SERVER_ORDER)))
    rows = tuple(
        (r.cell_id, r.verdict.value, r.settings.get("gpu_policy") or MISSING, gpu_processes_text(r),
         fmt_mib(r.memory.total_gpu_mb), card_share(r))
        for r in cells
    )
    return [
        Heading("GPU memory per process"),
        Para("MiB of GPU memory each process of the deployment held, as NVML reports it (0: the process is "
             "not on the GPU), read after verification: for an OK cell before load, for a failing cell in its "
             "failing state. The policy is the memory policy every process inherited (off: the framework's "
             "default). The share is of the first GPU's memory."),
        Table(("cell", "verdict", "policy", "GPU MiB per process", "total MiB", "share of the card"), rows),
    ]


# (e) failing cells


def tail_lines(text: str, n: int = LOG_TAIL_LINES) -> str:
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-n:])


def failing_cell_blocks(record: CellRecord) -> list[Block]:
    blocks: list[Block] = [Heading(f"{record.cell_id}: {record.verdict.value}", 3)]
    findings = record.evidence.findings[:FINDINGS_SHOWN]
    if findings:
        blocks += [Para(f, "Finding:") for f in findings]
    else:
        blocks.append(Para("No findings recorded."))
    if record.evidence.log_highlights:
        blocks.append(Para("the lines of the server log that say what went wrong, each once:", "Telling lines:"))
        blocks.append(Code("\n".join(record.evidence.log_highlights)))
    if record.evidence.stacks:
        blocks.append(Para("where each worker and model server was stuck while the cell hung (py-spy dump):",
                           "Stacks:"))
        blocks.append(Code("\n\n".join(record.evidence.stacks)))
    if record.evidence.log_tail.strip():
        blocks.append(Para(f"the last {LOG_TAIL_LINES} lines of the server log:", "Log tail:"))
        blocks.append(Code(tail_lines(record.evidence.log_tail)))
    return blocks


def reliability_section(records: Sequence[CellRecord]) -> list[Block]:
    """Scenario x strategy x server: what the disruption cost and whether the cell came back."""
    cells = [r for r in latest_by_cell(records).values() if r.scenario != "steady"]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.scenario, rank(r.strategy, STRATEGY_ORDER), rank(r.server, SERVER_ORDER)))
    rows = []
    for r in cells:
        d = r.disruption
        failed = d.failed.total if d else (r.errors.total if r.scenario == "bad-input" else None)
        rows.append((
            r.scenario, r.strategy, r.server, r.verdict.value,
            d.event if d and d.event else MISSING,
            fmt_int(failed), fmt_int(d.http_503) if d else MISSING,
            fmt_fixed(2)(d.recovery_s) if d and d.recovery_s is not None else MISSING,
            fmt_int(r.rows_expected - r.rows_found), fmt_int(d.ok) if d else MISSING,
        ))
    return [
        Heading("Reliability"),
        Para("Each scenario loads the cell with the built-in driver at concurrency 8 (32 for db-contention) and "
             "disrupts it a third of the way in. Failed requests: timeouts, refused or reset connections and 5xx "
             "(503 shown apart: the deployment said 'retry later'). Recovery: from the event to the first 0.25 s "
             "interval back at 80% of the throughput before it. Rows lost: acknowledged rows missing or changed."),
        Table(("scenario", "strategy", "server", "verdict", "event", "failed requests", "of which 503",
               "recovery s", "rows lost", "answered 200"), tuple(rows)),
    ]


def failing_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Failing cells")]
    failing = [r for r in latest_by_cell(records).values() if not r.verdict.ok]
    if not failing:
        return blocks + [Para("Every cell was OK.")]
    for record in failing:
        blocks += failing_cell_blocks(record)
    return blocks
