"""Publish a run: RESULTS.md, results.csv, results.json and results.html from the same records.

Analysis and publishing are apart: the modules that decide something (``controls``, ``article``,
``recommend``, ``goals``, ``run_facts``, ``launches``) take records and return typed results or
facts; this module and ``report_table`` (the flat table, CSV and JSON) put them into one list of
blocks (``forkwise.matrix.publish.document``), which ``render_markdown`` and ``render_html`` each render.
The numbers are formatted only when rendered.

Every conclusion the report states (the article's three cases: ``article``; the recommendation:
``recommend``; the performance goals: ``goals``) is computed from the records of this run;
nothing is written in ahead of the data, and nothing measured on another machine is passed off
as this run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise.matrix.analysis.goal_provenance import Bench, Profiles, load_bench, load_profiles
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.ordering import (
    cell_order,
    combination,
    combination_label,
    combinations,
    latest_by_cell,
    rank,
    servers_of,
    strategies_of,
)
from forkwise.matrix.analysis.paired import load_goal_rounds
from forkwise.matrix.publish.article_report import article_section
from forkwise.matrix.publish.database_report import database_section
from forkwise.matrix.publish.document import (  # noqa: F401  (render_markdown, render_html: the renderers, re-exported)
    MISSING,
    Block,
    Code,
    Heading,
    Para,
    Table,
    fmt_fixed,
    fmt_int,
    fmt_mib,
    render_html,
    render_markdown,
)
from forkwise.matrix.publish.explorer import Part, explorer_data
from forkwise.matrix.publish.explorer_page import render_page
from forkwise.matrix.publish.finalists_report import finalists_section, load_finalists
from forkwise.matrix.publish.goals_report import goals_section, run_goals
from forkwise.matrix.publish.lifecycle_report import lifecycle_section
from forkwise.matrix.publish.model_server_report import model_server_section
from forkwise.matrix.publish.plots import plot_section
from forkwise.matrix.publish.recommend_report import recommendation_section
from forkwise.matrix.publish.report_table import (  # noqa: F401  (columns, render_csv, table_rows: re-exported)
    LOAD_VIEW,
    MEMORY_VIEW,
    columns,
    ok_load_rows,
    one_row_per_cell,
    render_csv,
    render_json,
    table_rows,
    view_table,
)
from forkwise.matrix.publish.run_facts import header_facts
from forkwise.matrix.publish.soak_report import soak_section
from forkwise.matrix.records import rules
from forkwise.matrix.records.axes import STEADY, axes
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.roles import ROLES
from forkwise.matrix.records.run_info import (
    FINALISTS_FILE,
    GOAL_ROUNDS_FILE,
    RunInfo,
    as_run_info,
    bench_path,
    profiles_dir,
)
from forkwise.matrix.records.types import BAD_INPUT, CellRecord

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
    info: RunInfo

    @classmethod
    def of(cls, records: Iterable[CellRecord], profile: str, info: RunInfo | Mapping[str, Any] | None) -> Run:
        launches = tuple(records)
        return cls(launches, tuple(combine_all(launches)), profile, as_run_info(info))

    @property
    def budgets(self) -> Budgets:
        return Budgets.from_dict(dict(self.info.recommend or {}))


@dataclass(frozen=True)
class Extras:
    """Made by other commands than the run, found beside its folder: the goals section decides
    what of it to use (only what says it was made on the run's host)."""

    bench: Bench | None = None
    profiles: dict[str, Profiles] = field(default_factory=dict)
    finalists: dict[str, Any] | None = None  # the run's own finalists stage (finalists.json)
    goal_rounds: dict[str, Any] | None = None  # the run's goal pairs measured interleaved (goal_rounds.json)


def write_report(records: list[CellRecord], out_dir: Path, profile: str,
                 run_info: RunInfo | Mapping[str, Any] | None) -> list[Path]:
    """Write RESULTS.md, results.csv, results.json and results.html into out_dir; return their paths.

    `records`: every launch's record (records.jsonl) or records already combined (results.json).
    The micro-benchmarks and profiles are in the run's folder (bench/, profiles/: matrix.goal_evidence);
    the goals section uses them only where they say they come from this run's host."""
    run = Run.of(records, profile, run_info)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(run.records)
    extras = Extras(load_bench(bench_path(out_dir)), load_profiles(profiles_dir(out_dir)),
                    load_finalists(out_dir / FINALISTS_FILE), load_goal_rounds(out_dir / GOAL_ROUNDS_FILE))
    outputs = {
        "RESULTS.md": render_markdown(build_document(run, rows, extras, with_plots=False)),
        "results.csv": render_csv(rows),
        "results.json": render_json(run.records, profile, run.info),
        "results.html": explorer_html(run, rows, extras),
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


def explorer_html(run: Run, rows: Sequence[dict[str, Any]], extras: Extras) -> str:
    """results.html: the explorer of the run's cells above the report's blocks (``explorer_page``)."""
    title = _title(run.profile)
    part = Part(None, run.records, rows, run.budgets, run_goals(run.records, extras.bench, extras.goal_rounds),
                extras.finalists)
    return render_page(title, explorer_data(title, [part]), build_document(run, rows, extras, with_plots=True))

# --- the document ----------------------------------------------------------------------------


def build_document(run: Run, rows: Sequence[dict[str, Any]], extras: Extras, with_plots: bool) -> list[Block]:
    records = run.records
    blocks: list[Block] = [Heading(_title(run.profile), 1)]
    blocks += header_section(run)
    blocks += verdict_section(records)
    blocks += load_section(rows)
    blocks += model_server_section(records)
    blocks += memory_section(rows)
    blocks += gpu_memory_section(records)
    blocks += database_section(records)
    blocks += reliability_section(records)
    blocks += lifecycle_section(records)
    blocks += soak_section(records, with_plots)
    if with_plots:
        blocks += plot_section(records)
    blocks += failing_section(records)
    blocks += article_section(records)
    blocks += finalists_section(extras.finalists)
    blocks += recommendation_section(records, run.budgets, with_plots)
    blocks += goals_section(records, extras.bench, extras.profiles, extras.goal_rounds)
    return blocks



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
    return blocks + rules_note(records)


def rules_note(records: Sequence[CellRecord]) -> list[Block]:
    """Verdicts made under older rules say so, with what changed since (records.rules)."""
    blocks: list[Block] = []
    judged = [(r.rules, r.disruption is not None) for r in records]
    for date, count in sorted(rules.older_rules(judged).items()):
        failing = [f"{r.cell_id} {r.verdict.value}" for r in records if r.rules == date and not r.verdict.ok
                   and rules.changed_since(date, r.disruption is not None)]
        disrupted = any(d for r_date, d in judged if r_date == date)
        changes = "; ".join(f"{c.date}: {c.what}" for c in rules.changed_since(date, disrupted))
        rule = f"the rules {date}" if date == rules.BEFORE_FIRST else f"the rule of {date}"
        blocks.append(Para(f"{count} cells were judged by {rule}"
                           + (f" (not OK: {', '.join(failing)})" if failing else "")
                           + f". The rules changed since ({changes}); re-run these cells to judge them by "
                           "today's.", "Older rules:"))
    return blocks



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
            "divided by the rps of its control (forkwise.matrix.analysis.controls: the same request path: "
            f"{', '.join(a.column for a in axes() if a.shared_by_peers)}) at the same concurrency in this run."
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


def gpu_processes_text(record: CellRecord) -> str:
    """'master 0 · worker 107,988 · worker 34,314': GPU MiB of each process, master first."""
    if record.memory is None:
        return MISSING
    procs = sorted(record.memory.processes, key=lambda p: (rank(p.role, ROLES), p.pid))
    return " · ".join(f"{p.role} {fmt_mib(p.gpu_mb)}" for p in procs if p.gpu_mb is not None) or MISSING


def card_share(record: CellRecord) -> str:
    card = record.environment.gpu_memory_mb
    total = record.memory.total_gpu_mb if record.memory else None
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
    cells.sort(key=lambda r: (r.backend, *cell_order(r)))
    rows = tuple(
        (r.cell_id, r.verdict.value, r.settings.get("gpu_policy") or MISSING, gpu_processes_text(r),
         fmt_mib(r.memory.total_gpu_mb if r.memory else None), card_share(r))
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
    cells = [r for r in latest_by_cell(records).values() if r.scenario != STEADY]
    if not cells:
        return []
    cells.sort(key=lambda r: (r.scenario, *cell_order(r)))
    rows = []
    for r in cells:
        d = r.disruption
        failed = d.failed.total if d else (r.errors.total if r.scenario == BAD_INPUT else None)
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
             "interval back at 80% of the throughput before it, each interval's rate divided by the share of "
             "the cores the rest of the machine left it. Rows lost: acknowledged rows missing or changed."),
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
