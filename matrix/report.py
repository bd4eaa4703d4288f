"""Publish a run: RESULTS.md, results.csv, results.json and results.html from the same records.

One path per format, and the numbers are formatted only when rendered:

- ``table_rows`` flattens the records into one row per (cell, concurrency level) plus one row per
  cell without load. The columns are declared once, in ``COLUMNS``; results.csv writes them raw,
  the Markdown and HTML tables show chosen columns through each column's formatter.
- ``build_document`` turns records into a list of blocks (headings, paragraphs, tables, code,
  plots); ``render_markdown`` and ``render_html`` each render that one document.
- results.json is the records themselves (``CellRecord.to_dict``), so ``read_records`` reads it back.

Every conclusion the report states (the article's three cases, the recommendation) is computed
from the records of this run; nothing is written in ahead of the data.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from forkwise.matrix.launches import combine_all, describe_noise, launch_noise
from forkwise.matrix.records import HOST_SLOW_RATIO, SCHEMA_VERSION, CellRecord, LoadLevel, Verdict

CONTROL = "control"
STRATEGY_ORDER = (
    "import-in-route",
    "preload",
    "preload-import",
    "lazy",
    "locked-singleton",
    "child-process",
    "child-process-batched",
    "control",
)
SERVER_ORDER = ("gunicorn-sync", "gunicorn-gthread", "uwsgi", "uwsgi-threads")
LOG_TAIL_LINES = 10
FINDINGS_SHOWN = 3
MISSING = "-"

REPORT_FILES = ("RESULTS.md", "results.csv", "results.json", "results.html")


# --- entry point ---------------------------------------------------------------------------


def write_report(records: list[CellRecord], out_dir: Path, profile: str, run_info: dict) -> list[Path]:
    """Write RESULTS.md, results.csv, results.json and results.html into out_dir; return their paths."""
    from forkwise.matrix.goals import load_bench, load_profiles

    records = combine_all(records)  # one record per cell, whatever launches it was measured in
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(records)
    # The micro-benchmarks live beside the profiles' folders: results/bench/benchmarks.json.
    run_info = {**run_info, "bench": load_bench(out_dir.parent / "bench" / "benchmarks.json"),
                "profiles": load_profiles(out_dir.parent / "profiles")}
    outputs = {
        "RESULTS.md": render_markdown(build_document(records, rows, profile, run_info, with_plots=False)),
        "results.csv": render_csv(rows),
        "results.json": render_json(records, profile, run_info),
        "results.html": render_html(
            build_document(records, rows, profile, run_info, with_plots=True), _title(profile)
        ),
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


# --- ordering and grouping -----------------------------------------------------------------


def _ordered(names: Iterable[str], canonical: Sequence[str]) -> list[str]:
    names = set(names)
    known = [n for n in canonical if n in names]
    return known + sorted(names - set(canonical))


def strategies_of(records: Iterable[CellRecord]) -> list[str]:
    return _ordered((r.strategy for r in records), STRATEGY_ORDER)


def servers_of(records: Iterable[CellRecord]) -> list[str]:
    return _ordered((r.server for r in records), SERVER_ORDER)


def combination(record: CellRecord) -> tuple[int, str, str, str, str]:
    """What a verdict matrix holds fixed: workers, model, device, scenario, backend."""
    return (record.workers, record.model, record.device, record.scenario, record.backend)


def combination_label(combo: tuple[int, str, str, str, str]) -> str:
    workers, model, device, scenario, backend = combo
    backend_part = "" if backend == "tensorflow" else f", backend {backend}"
    return f"{workers} workers, model {model}, device {device}{backend_part}, scenario {scenario}"


def combinations(records: Sequence[CellRecord]) -> list[tuple[int, str, str, str, str]]:
    """Distinct combinations, the most common first (ties in first-seen order)."""
    counts = Counter(combination(r) for r in records)
    first_seen = {c: i for i, c in reversed(list(enumerate(combination(r) for r in records)))}
    return sorted(counts, key=lambda c: (-counts[c], first_seen[c]))


def latest_by_cell(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    """One record per cell_id (the last one, should a cell appear twice)."""
    return {r.cell_id: r for r in records}


def level_at(record: CellRecord | None, concurrency: int) -> LoadLevel | None:
    if record is None:
        return None
    return next((lv for lv in record.load if lv.concurrency == concurrency), None)


def highest_level(record: CellRecord) -> LoadLevel | None:
    return max(record.load, key=lambda lv: lv.concurrency, default=None)


# --- the control cell each cell is compared with -------------------------------------------


def control_index(records: Iterable[CellRecord]) -> dict[tuple, CellRecord]:
    """Control records by (server, workers, model, device, scenario, backend)."""
    return {
        (r.server, r.workers, r.model, r.device, r.scenario, r.backend): r for r in records if r.strategy == CONTROL
    }


def control_for(record: CellRecord, controls: dict[tuple, CellRecord]) -> CellRecord | None:
    """The control of the same server/workers/model/device; same scenario and backend first,
    then steady, then any."""
    exact = controls.get((record.server, record.workers, record.model, record.device, record.scenario, record.backend))
    if exact is not None:
        return exact
    wanted = (record.server, record.workers, record.model, record.device)
    same = [c for key, c in controls.items() if key[:4] == wanted]
    same.sort(key=lambda c: (c.backend != record.backend, c.scenario != "steady"))
    return same[0] if same else None


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


def _fmt_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, Verdict):
        return value.value
    return str(value)


def _fmt_fixed(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        return f"{value:,.{digits}f}"

    return fmt


def _fmt_ms(value: Any) -> str:
    if value is None:
        return MISSING
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _fmt_ratio(value: Any) -> str:
    return MISSING if value is None else f"{value:.2f}x"


def _fmt_int(value: Any) -> str:
    return MISSING if value is None else f"{value:d}"


_fmt_mib = _fmt_fixed(0)


@dataclass(frozen=True)
class Column:
    key: str  # CSV header and row-dict key
    title: str  # table heading
    get: Callable[[RowSource], Any]  # the raw value (number, str, Verdict or None)
    fmt: Callable[[Any], str] = _fmt_text  # how a table shows it


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
    Column("workers", "workers", lambda s: s.record.workers, _fmt_int),
    Column("threads", "threads", lambda s: s.record.threads, _fmt_int),
    Column("model", "model", lambda s: s.record.model),
    Column("device", "device", lambda s: s.record.device),
    Column("backend", "backend", lambda s: s.record.backend),
    Column("scenario", "scenario", lambda s: s.record.scenario),
    Column("verdict", "verdict", lambda s: s.record.verdict),
    Column("concurrency", "concurrency", _lv("concurrency"), _fmt_int),
    Column("level_duration_s", "level s", _lv("duration_s"), _fmt_fixed(1)),
    Column("level_requests", "requests", _lv("requests"), _fmt_int),
    Column("rps", "rps", _lv("rps"), _fmt_fixed(1)),
    Column("rps_stdev", "rps stdev", _lv("rps_stdev"), _fmt_fixed(1)),
    Column("launches", "launches", lambda s: s.record.launches, _fmt_int),
    Column("launch_rps", "rps per launch", lambda s: None if s.level is None else
           " ".join(f"{x:.1f}" for x in s.level.launch_rps) or None),
    Column("host_slowdown", "host slowdown", _lv("host_slowdown"), _fmt_fixed(2)),
    Column("launches_set_aside", "launches set aside", _lv("launches_set_aside"), _fmt_int),
    Column("ratio_to_control", "vs control", lambda s: ratio_to_control(s.level, s.control_level), _fmt_ratio),
    Column("p50_ms", "p50 ms", _lat("p50_ms"), _fmt_ms),
    Column("p90_ms", "p90 ms", _lat("p90_ms"), _fmt_ms),
    Column("p99_ms", "p99 ms", _lat("p99_ms"), _fmt_ms),
    Column("max_ms", "max ms", _lat("max_ms"), _fmt_ms),
    Column("mean_ms", "mean ms", _lat("mean_ms"), _fmt_ms),
    Column("errors", "errors", lambda s: None if s.level is None else s.level.errors.total, _fmt_int),
    Column("errors_timeout", "timeouts", lambda s: None if s.level is None else s.level.errors.timeout, _fmt_int),
    Column("errors_5xx", "5xx", lambda s: None if s.level is None else s.level.errors.http_5xx, _fmt_int),
    Column("rows_expected", "rows expected", _lv("rows_expected"), _fmt_int),
    Column("rows_found", "rows found", _lv("rows_found"), _fmt_int),
    Column("rows_lost", "rows lost", _lv("rows_lost"), _fmt_int),
    Column("sampled", "sampled", _lv("sampled"), _fmt_int),
    Column("sampled_wrong", "sampled wrong", _lv("sampled_wrong"), _fmt_int),
    Column("driver", "driver", _lv("driver")),
    Column("driver_cpu_s", "driver CPU s", _lv("driver_cpu_s"), _fmt_fixed(1)),
    Column("server_cpu_s", "server CPU s", _lv("server_cpu_s"), _fmt_fixed(1)),
    Column("cold_start_s", "cold start s", lambda s: s.record.cold_start_s, _fmt_fixed(2)),
    Column("warm_all_s", "all warm s", lambda s: s.record.warm_all_s, _fmt_fixed(2)),
    Column("total_pss_mb", "PSS MB", _mem("total_pss_mb"), _fmt_fixed(1)),
    Column("total_uss_mb", "USS MB", _mem("total_uss_mb"), _fmt_fixed(1)),
    Column("total_rss_mb", "RSS MB", _mem("total_rss_mb"), _fmt_fixed(1)),
    Column("total_gpu_mb", "GPU MB", _mem("total_gpu_mb"), _fmt_fixed(1)),
    Column("master_processes", "masters", _role_count("master"), _fmt_int),
    Column("worker_processes", "workers seen", _role_count("worker"), _fmt_int),
    Column("model_server_processes", "model servers", _role_count("model-server"), _fmt_int),
    Column("supervisor_processes", "supervisors", _role_count("supervisor"), _fmt_int),
    Column("verify_requests", "verify requests", lambda s: s.record.requests, _fmt_int),
    Column("verify_ok", "verify ok", lambda s: s.record.ok, _fmt_int),
    Column("verify_errors", "verify errors", lambda s: s.record.errors.total, _fmt_int),
    Column(
        "verify_rows_lost",
        "verify rows lost",
        lambda s: max(0, s.record.rows_expected - s.record.rows_found),
        _fmt_int,
    ),
    Column("cell_duration_s", "cell s", lambda s: s.record.duration_s, _fmt_fixed(1)),
)
COLUMN = {c.key: c for c in COLUMNS}


def row_sources(records: Sequence[CellRecord]) -> list[RowSource]:
    """One source per (cell, concurrency level), and one per cell that has no load."""
    controls = control_index(records)
    sources = []
    for record in records:
        control = control_for(record, controls)
        if not record.load:
            sources.append(RowSource(record, None, None))
        for level in sorted(record.load, key=lambda lv: lv.concurrency):
            sources.append(RowSource(record, level, level_at(control, level.concurrency)))
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
        "run": {k: v for k, v in run_info.items() if k not in ("bench", "profiles")},
        "environment": records[0].to_dict()["environment"] if records else None,
        # concurrency -> relative stdev of rps between launches of a cell, pooled over the OK cells
        "launch_noise": {str(c): v for c, v in launch_noise(records).items()},
        "records": [r.to_dict() for r in records],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


# --- the document: blocks rendered to Markdown and to HTML ---------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    lead: str = ""  # shown in bold before the text


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Plot:
    caption: str
    png: bytes


Block = Heading | Para | Table | Code | Plot


def build_document(
    records: Sequence[CellRecord],
    rows: Sequence[dict[str, Any]],
    profile: str,
    run_info: dict,
    with_plots: bool,
) -> list[Block]:
    blocks: list[Block] = [Heading(_title(profile), 1)]
    blocks += header_section(records, profile, run_info)
    blocks += verdict_section(records)
    blocks += load_section(rows)
    blocks += memory_section(rows)
    blocks += gpu_memory_section(records)
    blocks += reliability_section(records)
    if with_plots:
        blocks += plot_section(records)
    blocks += failing_section(records)
    blocks += article_section(records)
    blocks += recommendation_section(records)
    blocks += goals_section(records, run_info.get("bench", {}), run_info.get("profiles", {}))
    return blocks


PROFILE_LINES = 10
# Parts of the request path, by the functions that enclose them, for the "why" of a missed goal.
REQUEST_PATH_PARTS = (
    ("model call", ("Predictor.__call__", "ModelClient.predict")),
    ("database write", ("Database.record",)),
    ("request validation", ("instances_from", "parse_body")),
)


def request_path_shares(summary: str) -> str:
    """'model call 52%, database write 22%, ...' from a profile summary's inclusive section."""
    inclusive = summary.split("self       function", 1)[0]
    shares = []
    for part, functions in REQUEST_PATH_PARTS:
        found = [float(line.split("%", 1)[0]) for line in inclusive.splitlines()
                 if "%" in line and line.split("%", 1)[1].strip().split(" ", 1)[0] in functions]
        if found:
            shares.append(f"{part} {max(found):.0f}%")
    return ", ".join(shares) + " of the busy samples" if shares else "none of the request path's parts sampled"


def goals_section(records: Sequence[CellRecord], bench: dict, profiles: dict) -> list[Block]:
    from forkwise.matrix.goals import evaluate

    verdict = {True: "met", False: "missed", None: "not measured in this run"}
    goals = evaluate(records, bench)
    rows = tuple(
        (str(g.number), g.goal, g.measured, _fmt_ratio(g.ratio) if g.ratio is not None else MISSING, g.target, verdict[g.met])
        for g in goals
    )
    blocks: list[Block] = [
        Heading("Performance goals"),
        Para("Judged by code from this run's records and the micro-benchmarks (`tox -e bench`). For a missed "
             "goal, where the time goes: py-spy profiles of the cells it was judged on, taken at concurrency 32 "
             "by `forkwise cell --profile-dir results/profiles` (self time of the busiest functions, per process)."),
        Table(("#", "goal", "measured", "ratio", "target", "result"), rows),
    ]
    for goal in goals:
        if goal.met is not False:
            continue
        found = [(label, process, text) for label in goal.cells for process, text in profiles.get(label, [])]
        blocks.append(Heading(f"Goal {goal.number} missed: where the time goes", 3))
        if not found:
            blocks.append(Para("No profile of its cells under results/profiles; the measured column holds the breakdown."))
        for label, process, text in found:
            own = text.split("self       function", 1)[-1].strip("\n").splitlines()[:PROFILE_LINES]
            blocks.append(Para(f"{label}, {process}: {text.splitlines()[0]}; {request_path_shares(text)}."))
            blocks.append(Code("\n".join(own)))
    return blocks


# (a) header


def header_facts(records: Sequence[CellRecord], profile: str, run_info: dict) -> list[tuple[str, str]]:
    env = records[0].environment if records else None
    facts = [
        ("profile", profile),
        ("date", str(run_info.get("started_at") or (env.date if env else MISSING))),
        ("run duration", _fmt_duration(run_info.get("duration_s"))),
        ("load driver", str(run_info.get("driver") or _drivers_seen(records) or MISSING)),
        ("cells", str(len(latest_by_cell(records)))),
        ("launches per cell", _fmt_launches(records)),
        ("launch-to-launch noise", _fmt_noise(launch_noise(records))),
    ]
    if any(lv.host_slowdown for r in records for lv in r.load):
        facts.append(("host slow spells", _fmt_slow_spells(records, run_info)))
    if run_info.get("command"):
        facts.append(("command", str(run_info["command"])))
    if env is not None:
        facts += [
            ("machine", f"{env.cpu_model}, {env.cores} cores, {env.memory_gb:g} GB memory"),
            *([("GPU", f"{env.gpu_name}, driver {env.gpu_driver}")] if env.gpu_name else []),
            ("python", env.python),
            ("platform", env.platform),
            ("git commit", env.git_commit),
            ("packages", ", ".join(f"{k} {v}" for k, v in sorted(env.packages.items())) or MISSING),
        ]
    return facts


def _fmt_slow_spells(records: Sequence[CellRecord], run_info: dict) -> str:
    levels = [lv for r in records for lv in r.load]
    set_aside = sum(lv.launches_set_aside for lv in levels)
    slow = sum(lv.host_slow for lv in levels)
    waited = run_info.get("quiet_wait_s")
    return (f"{set_aside} launch-levels measured while the CPU probe ran over {HOST_SLOW_RATIO}x its reference "
            f"were set aside (another launch of the level was not slow); {slow} of {len(levels)} levels were slow "
            "in every launch and are kept" + (f"; {waited:g} s spent waiting for a quiet host" if waited else ""))


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


def _fmt_duration(seconds: Any) -> str:
    if seconds is None:
        return MISSING
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def header_section(records: Sequence[CellRecord], profile: str, run_info: dict) -> list[Block]:
    facts = header_facts(records, profile, run_info)
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
    return f"{show('rps', row)} ± {show('rps_stdev', row)}"


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
            "divided by the control cell's rps on the same server/workers/model/device at the same "
            "concurrency in this run."
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
    procs = sorted(record.memory.processes, key=lambda p: (_rank(p.role, ROLE_ORDER), p.pid))
    return " · ".join(f"{p.role} {_fmt_mib(p.gpu_mb)}" for p in procs if p.gpu_mb is not None) or MISSING


def card_share(record: CellRecord) -> str:
    card = record.environment.gpu_memory_mb
    total = record.memory.total_gpu_mb
    if not card or total is None:
        return MISSING
    share = total / card
    return f"{share:.1%} of {_fmt_mib(card)}" if share < 0.1 else f"{share:.0%} of {_fmt_mib(card)}"


def gpu_memory_section(records: Sequence[CellRecord]) -> list[Block]:
    """GPU memory per process, for every GPU cell whose processes were measured (failing ones too)."""
    cells = [
        r for r in latest_by_cell(records).values()
        if r.device == "gpu" and r.memory and any(p.gpu_mb is not None for p in r.memory.processes)
    ]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.backend, _rank(r.strategy, STRATEGY_ORDER), _rank(r.server, SERVER_ORDER)))
    rows = tuple(
        (r.cell_id, r.verdict.value, r.settings.get("gpu_policy") or MISSING, gpu_processes_text(r),
         _fmt_mib(r.memory.total_gpu_mb), card_share(r))
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
    if record.evidence.log_tail.strip():
        blocks.append(Para(f"the last {LOG_TAIL_LINES} lines of the server log:", "Log tail:"))
        blocks.append(Code(tail_lines(record.evidence.log_tail)))
    return blocks


def reliability_section(records: Sequence[CellRecord]) -> list[Block]:
    """Scenario x strategy x server: what the disruption cost and whether the cell came back."""
    cells = [r for r in latest_by_cell(records).values() if r.scenario != "steady"]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.scenario, _rank(r.strategy, STRATEGY_ORDER), _rank(r.server, SERVER_ORDER)))
    rows = []
    for r in cells:
        d = r.disruption
        failed = d.failed.total if d else (r.errors.total if r.scenario == "bad-input" else None)
        rows.append((
            r.scenario, r.strategy, r.server, r.verdict.value,
            d.event if d and d.event else MISSING,
            _fmt_int(failed), _fmt_int(d.http_503) if d else MISSING,
            _fmt_fixed(2)(d.recovery_s) if d and d.recovery_s is not None else MISSING,
            _fmt_int(r.rows_expected - r.rows_found), _fmt_int(d.ok) if d else MISSING,
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


# (f) the article's three cases


@dataclass(frozen=True)
class ArticleCase:
    number: int
    title: str
    strategy: str
    claim: str  # what the article asserts; the run decides whether it was observed
    related: tuple[str, ...] = ()


ARTICLE_CASES = (
    ArticleCase(1, "import TensorFlow inside the route", "import-in-route",
                "concurrent first imports of TensorFlow inside a route fail"),
    ArticleCase(2, "load at module level, before the fork", "preload",
                "loading TensorFlow at module level before the fork is still problematic",
                related=("preload-import",)),
    ArticleCase(3, "a singleton loader (done properly: locked)", "locked-singleton",
                "a singleton loader cannot avoid races between forked workers on their first requests",
                related=("lazy",)),
)


def verdict_summary(verdicts: Sequence[Verdict]) -> str:
    counts = Counter(verdicts)
    return ", ".join(f"{v.value} x{counts[v]}" for v in Verdict if counts[v])


def case_sentence(case: ArticleCase, cells: Sequence[CellRecord]) -> str:
    """One sentence, generated from the verdicts counted in this run."""
    if not cells:
        return (f"{case.strategy} was not run in this profile, so the article's claim that "
                f"{case.claim} was neither confirmed nor refuted.")
    n = len(cells)
    ok = sum(1 for r in cells if r.verdict.ok)
    summary = verdict_summary([r.verdict for r in cells])
    servers = {r.server for r in cells}
    unit = "server settings" if len(servers) == n else "cells"
    every = f"all {n} {unit}" if n > 1 else f"its only {unit[:-1]}, {cells[0].server}"
    if ok == n:
        return (f"{case.strategy} answered correctly under {every} ({summary}): "
                f"the article's claim that {case.claim} was not observed.")
    if ok == 0:
        return (f"{case.strategy} failed under {every} ({summary}): "
                f"the article's claim that {case.claim} was observed.")
    failing = ", ".join(_ordered({r.server for r in cells if not r.verdict.ok}, SERVER_ORDER))
    return (f"{case.strategy} answered correctly under {ok} of {n} {unit} ({summary}) and failed on "
            f"{failing}: the article's claim that {case.claim} was observed there only.")


def cells_of(records: Iterable[CellRecord], strategy: str) -> list[CellRecord]:
    return [r for r in latest_by_cell(records).values() if r.strategy == strategy]


def case_table(cells: Sequence[CellRecord]) -> Table:
    rows = tuple(
        (r.cell_id, r.verdict.value, r.evidence.findings[0] if r.evidence.findings else MISSING)
        for r in sorted(cells, key=lambda r: (_rank(r.server, SERVER_ORDER), r.cell_id))
    )
    return Table(("cell", "verdict", "first finding"), rows)


def _rank(name: str, canonical: Sequence[str]) -> int:
    return canonical.index(name) if name in canonical else len(canonical)


def related_sentence(strategy: str, records: Sequence[CellRecord]) -> str:
    cells = cells_of(records, strategy)
    if not cells:
        return f"{strategy}: not run in this profile."
    return f"{strategy}: {verdict_summary([r.verdict for r in cells])} over {len(cells)} cells."


def article_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("The article's three cases, answered")]
    for case in ARTICLE_CASES:
        cells = cells_of(records, case.strategy)
        blocks.append(Heading(f"Case {case.number}: {case.title} (strategy {case.strategy})", 3))
        blocks.append(Para(case_sentence(case, cells), "Observed:"))
        if cells:
            blocks.append(case_table(cells))
        for strategy in case.related:
            blocks.append(Para(related_sentence(strategy, records), "For comparison,"))
    return blocks


# (g) recommendation


@dataclass(frozen=True)
class Pick:
    record: CellRecord
    level: LoadLevel | None


def load_candidates(records: Iterable[CellRecord]) -> list[CellRecord]:
    return [r for r in latest_by_cell(records).values() if r.verdict.ok and r.strategy != CONTROL and r.load]


def common_concurrency(candidates: Sequence[CellRecord]) -> int | None:
    """The highest concurrency every candidate measured, or None if they share none."""
    if not candidates:
        return None
    common = set.intersection(*({lv.concurrency for lv in r.load} for r in candidates))
    return max(common) if common else None


def picks_at(candidates: Sequence[CellRecord], concurrency: int | None) -> list[Pick]:
    if concurrency is None:
        return [Pick(r, highest_level(r)) for r in candidates]
    return [Pick(r, level_at(r, concurrency)) for r in candidates]


def rank_throughput(picks: Sequence[Pick]) -> list[Pick]:
    return sorted(picks, key=lambda p: (-p.level.rps, p.record.cell_id))


def rank_latency(picks: Sequence[Pick]) -> list[Pick]:
    return sorted(picks, key=lambda p: (p.level.latency.p99_ms, p.record.cell_id))


def rank_memory(records: Iterable[CellRecord]) -> list[Pick]:
    cells = [r for r in latest_by_cell(records).values() if r.verdict.ok and r.strategy != CONTROL and r.memory]
    picks = (Pick(r, highest_level(r)) for r in cells)
    return sorted(picks, key=lambda p: (p.record.memory.total_pss_mb, p.record.cell_id))


def pick_numbers(pick: Pick, controls: dict[tuple, CellRecord]) -> str:
    parts = []
    level = pick.level
    if level is not None:
        control_level = level_at(control_for(pick.record, controls), level.concurrency)
        ratio = ratio_to_control(level, control_level)
        rps, stdev = _fmt_fixed(1)(level.rps), _fmt_fixed(1)(level.rps_stdev)
        parts.append(f"{rps} ± {stdev} rps at concurrency {level.concurrency}")
        if ratio is not None:
            parts.append(f"{_fmt_ratio(ratio)} of control")
        parts.append(f"p99 {_fmt_ms(level.latency.p99_ms)} ms")
    if pick.record.memory is not None:
        parts.append(f"PSS {_fmt_fixed(1)(pick.record.memory.total_pss_mb)} MB")
    if pick.record.cold_start_s is not None:
        parts.append(f"cold start {_fmt_fixed(2)(pick.record.cold_start_s)} s")
    return ", ".join(parts) or MISSING


def recommendation_row(goal: str, ranked: Sequence[Pick], controls: dict[tuple, CellRecord]) -> tuple[str, ...]:
    first = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    return (
        goal,
        first.record.cell_id,
        pick_numbers(first, controls),
        second.record.cell_id if second else MISSING,
        pick_numbers(second, controls) if second else MISSING,
    )


def recommendation_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Recommendation")]
    controls = control_index(records)
    candidates = load_candidates(records)
    concurrency = common_concurrency(candidates)
    rows = []
    if candidates:
        picks = picks_at(candidates, concurrency)
        rows.append(recommendation_row("throughput matters most", rank_throughput(picks), controls))
        rows.append(recommendation_row("latency matters most", rank_latency(picks), controls))
        where = (f"at concurrency {concurrency}, the highest level every candidate measured"
                 if concurrency is not None else "at each cell's highest level (the candidates share no level)")
        blocks.append(Para(f"Among the OK cells other than control, {where}; memory by total PSS."))
    else:
        blocks.append(Para("No OK cell other than control has load data: no throughput or latency "
                           "recommendation can be made from this run."))
    memory = rank_memory(records)
    if memory:
        rows.append(recommendation_row("memory matters most", memory, controls))
    else:
        blocks.append(Para("No OK cell other than control recorded memory: no memory recommendation."))
    if rows:
        blocks.append(Table(("if", "pick", "its numbers", "runner-up", "runner-up's numbers"), tuple(rows)))
    return blocks


# (HTML only) plots


def plot_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Plots")]
    for combo in combinations(records):
        chosen = [r for r in latest_by_cell(records).values() if combination(r) == combo]
        blocks.append(Heading(combination_label(combo), 3))
        for plot in (throughput_plot(chosen), memory_plot(chosen), cold_start_plot(chosen)):
            blocks.append(plot if plot is not None else Para("(no data for this plot)"))
    return blocks


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def strategy_colors(records: Sequence[CellRecord]) -> dict[str, str]:
    """One colour per strategy, the same in every panel and plot."""
    return {strategy: f"C{i % 10}" for i, strategy in enumerate(strategies_of(records))}


def throughput_plot(records: Sequence[CellRecord]) -> Plot | None:
    with_load = [r for r in records if r.load]
    if not with_load:
        return None
    colors = strategy_colors(records)
    servers = servers_of(with_load)
    concurrencies = sorted({lv.concurrency for r in with_load for lv in r.load})
    fig = _new_figure(4.2 * len(servers), 3.6)
    axes = fig.subplots(1, len(servers), sharey=True, squeeze=False)[0]
    for ax, server in zip(axes, servers):
        on_server = [r for r in with_load if r.server == server]
        for record in sorted(on_server, key=lambda r: _rank(r.strategy, STRATEGY_ORDER)):
            levels = sorted(record.load, key=lambda lv: lv.concurrency)
            ax.errorbar([lv.concurrency for lv in levels], [lv.rps for lv in levels],
                        yerr=[lv.rps_stdev for lv in levels], marker="o", capsize=3, color=colors[record.strategy],
                        linestyle="-" if record.verdict.ok else ":", label=record.strategy)
        ax.set_title(server)
        ax.set_xlabel("concurrency")
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("requests/s")
    return Plot("Throughput vs concurrency (mean ± stdev of the rps samples), one line per strategy, "
                "one panel per server; dotted: a cell whose verdict is not OK", _png(fig))


def _grouped_bars(records: Sequence[CellRecord], value: Callable[[CellRecord], float | None], ylabel: str):
    measured = [r for r in records if value(r) is not None]
    if not measured:
        return None
    strategies = strategies_of(measured)
    servers = servers_of(measured)
    fig = _new_figure(max(5.0, 1.1 * len(strategies) + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        found = [_record_of(measured, strategy, server) for strategy in strategies]
        xs = [x + (i - (len(servers) - 1) / 2) * width for x in range(len(strategies))]
        heights = [math.nan if r is None else value(r) for r in found]
        bars = ax.bar(xs, heights, width, label=server, color=f"C{i % 10}")
        for bar, r in zip(bars, found):
            if r is not None and not r.verdict.ok:
                bar.set_hatch("//")
    ax.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="x-small")
    return fig


def _record_of(records: Sequence[CellRecord], strategy: str, server: str) -> CellRecord | None:
    return next((r for r in records if r.strategy == strategy and r.server == server), None)


def memory_plot(records: Sequence[CellRecord]) -> Plot | None:
    fig = _grouped_bars(records, lambda r: r.memory.total_pss_mb if r.memory else None, "total PSS (MB)")
    caption = "Memory: total PSS of the deployment per strategy (hatched: verdict not OK)"
    return None if fig is None else Plot(caption, _png(fig))


def cold_start_plot(records: Sequence[CellRecord]) -> Plot | None:
    fig = _grouped_bars(records, lambda r: r.cold_start_s, "cold start (s)")
    caption = "Cold start: launch to the first correct answer per strategy (hatched: verdict not OK)"
    return None if fig is None else Plot(caption, _png(fig))


# --- renderers -----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def markdown_block(block: Block) -> str | None:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        return f"**{block.lead}** {block.text}" if block.lead else block.text
    if isinstance(block, Table):
        header = "| " + " | ".join(_md_cell(h) for h in block.headers) + " |"
        rule = "|" + "|".join(" --- " for _ in block.headers) + "|"
        body = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join([header, rule, *body])
    if isinstance(block, Code):
        fence = _md_fence(block.text)
        return f"{fence}text\n{block.text}\n{fence}"
    return None  # plots live in the HTML page only


def render_markdown(blocks: Sequence[Block]) -> str:
    parts = [text for text in (markdown_block(b) for b in blocks) if text is not None]
    return "\n\n".join(parts) + "\n"


_VERDICT_VALUES = {v.value for v in Verdict}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
td.v-OK { background: #d9f2d9; } td.v-HANG, td.v-CRASH, td.v-BOOT { background: #f7d4d4; }
td.v-ERROR, td.v-WRONG, td.v-LOST { background: #fbe7c6; }
"""


def _html_td(text: str) -> str:
    cls = f' class="v-{text}"' if text in _VERDICT_VALUES else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        lead = f"<strong>{e(block.lead)}</strong> " if block.lead else ""
        return f"<p>{lead}{e(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(_html_td(c) for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Code):
        return f"<pre>{e(block.text)}</pre>"
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


def render_html(blocks: Sequence[Block], title: str) -> str:
    body = "\n".join(html_block(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
