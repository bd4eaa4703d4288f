"""The report of a merged folder (``forkwise.matrix.run.merge``): the host as an axis.

RESULTS.md and results.html: the hosts in a table, every cell's verdict side by side with one column
per host, then one section per host made of the normal report (``forkwise.matrix.publish.report``) of that
host's records only, its headings one level down: every control, ratio, recommendation and goal in
a section comes from that host. results.csv: the report's rows with a host column first.
results.json: the hosts, and every host's combined records (each names its host in its environment).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkwise.matrix.analysis.ordering import cell_order
from forkwise.matrix.publish import report
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table, render_markdown
from forkwise.matrix.publish.explorer import Part, explorer_data
from forkwise.matrix.publish.explorer_page import render_page
from forkwise.matrix.publish.goals_report import run_goals
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.hosts import HOSTS_DIR, Host, MissingShard
from forkwise.matrix.records.jsonl import RECORDS_FILE, read_records
from forkwise.matrix.records.run_info import RUN_INFO_FILE as RUN_INFO
from forkwise.matrix.records.run_info import RunInfo
from forkwise.matrix.records.types import SCHEMA_VERSION, CellRecord

AXIS_NOTE = ("Each host has its own section, made from that host's records only: its controls, ratios, "
             "recommendation and goals. Cells measured on different hardware are never pooled or compared "
             "as one; the verdicts below stand side by side, one column per host.")


@dataclass(frozen=True)
class HostRun:
    """One host of a merged folder: its name, hardware, and the run made of its records."""

    name: str
    host: Host
    run: report.Run
    rows: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return f"{self.host.label or self.name} ({self.host.hardware})"


def _host_of(entry: dict) -> Host:
    return Host(**{f.name: entry[f.name] for f in dataclasses.fields(Host)})


def read_hosts(out: Path, p99_ms: float | None = None, memory_mb: float | None = None) -> tuple[dict, list[HostRun]]:
    """The merged run.json and each host's run, with the recommendation's budgets set on the
    command line, if any, in place of the run's."""
    info = json.loads((out / RUN_INFO).read_text(encoding="utf-8"))
    runs = []
    for entry in info["hosts"]:
        folder = out / entry["folder"]
        host_info = RunInfo.read(folder)
        if p99_ms is not None or memory_mb is not None:
            budgets = Budgets.from_dict(dict(host_info.recommend or {})).overridden(p99_ms, memory_mb, "command line")
            host_info = host_info.with_budgets(budgets.to_dict())
        run = report.Run.of(read_records(folder / RECORDS_FILE), str(info["profile"]), host_info)
        runs.append(HostRun(entry["name"], _host_of(entry), run, report.table_rows(run.records)))
    return info, runs


# --- the document --------------------------------------------------------------------------


def title(info: dict, runs: Sequence[HostRun]) -> str:
    hosts = f"{len(runs)} host" + ("s" if len(runs) != 1 else "")
    return f"forkwise results: profile {info['profile']}, {hosts}"


def _verdicts(records: Sequence[CellRecord]) -> str:
    """'OK 6, HANG 2': OK first, then the others by name."""
    counts = Counter(r.verdict.value for r in records)
    return ", ".join(f"{v} {n}" for v, n in sorted(counts.items(), key=lambda vn: (vn[0] != "OK", vn[0])))


def host_table(runs: Sequence[HostRun]) -> Table:
    rows = []
    for hr in runs:
        sources = ", ".join(f"shard {s['shard']} ({s['folder']})" for s in hr.run.info.sources)
        rows.append((hr.name, hr.host.hardware, str(len(hr.run.records)),
                     _verdicts(hr.run.records), f"{HOSTS_DIR}/{hr.name}", sources or MISSING))
    return Table(("host", "hardware", "cells", "verdicts", "folder", "measured in"), tuple(rows))


def _cell_order(record: CellRecord) -> tuple:
    return (*cell_order(record), record.cell_id)


def side_by_side(runs: Sequence[HostRun]) -> Table:
    """One row per cell, one column per host: the verdict each host observed ("-": not measured
    there), and, with several hosts, whether those that measured it agree."""
    cells = {r.cell_id: r for hr in runs for r in hr.run.records}
    by_host = [{r.cell_id: r.verdict.value for r in hr.run.records} for hr in runs]
    rows = []
    for cell in sorted(cells, key=lambda c: _cell_order(cells[c])):
        seen = tuple(verdicts.get(cell, MISSING) for verdicts in by_host)
        measured = [v for v in seen if v != MISSING]
        agreement = ("one host only" if len(measured) == 1 else "same" if len(set(measured)) == 1 else "differs")
        rows.append((cell, *seen, agreement) if len(runs) > 1 else (cell, *seen))
    agree = ("hosts agree",) if len(runs) > 1 else ()
    return Table(("cell", *(hr.name for hr in runs), *agree), tuple(rows))


def _demoted(blocks: Sequence[Block]) -> list[Block]:
    """A report's body under a host's heading: its title dropped, every heading one level down."""
    return [dataclasses.replace(b, level=b.level + 1) if isinstance(b, Heading) else b
            for b in blocks if not (isinstance(b, Heading) and b.level == 1)]


def merged_document(info: dict, runs: Sequence[HostRun], with_plots: bool) -> list[Block]:
    blocks: list[Block] = [Heading(title(info, runs), 1)]
    for missing in info.get("missing_shards", []):
        line = MissingShard.from_dict(missing).describe(str(info["profile"]))
        blocks.append(Para(f"{line}. Its cells are not in this report.", lead="MISSING SHARD:"))
    blocks += [Para(AXIS_NOTE), Heading("Hosts"), host_table(runs), Heading("Verdicts by host"), side_by_side(runs)]
    for hr in runs:
        blocks.append(Heading(f"Host {hr.title}"))
        blocks += _demoted(report.build_document(hr.run, hr.rows, report.Extras(), with_plots))
    return blocks


# --- the files -----------------------------------------------------------------------------


def render_csv(runs: Sequence[HostRun]) -> str:
    """report's results.csv of each host, one table, with the host's label in a first column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, hr in enumerate(runs):
        header, *rows = csv.reader(io.StringIO(report.render_csv(hr.rows)))
        if i == 0:
            writer.writerow(["host", *header])
        writer.writerows([hr.name, *row] for row in rows)
    return buf.getvalue()


def render_json(info: dict, runs: Sequence[HostRun]) -> str:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "profile": info["profile"],
        "run": info,
        "hosts": [{"name": hr.name, **hr.host.to_dict(), "cells": len(hr.run.records)} for hr in runs],
        "records": [r.to_dict() for hr in runs for r in hr.run.records],
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def merged_html(info: dict, runs: Sequence[HostRun]) -> str:
    """results.html: the explorer of every host's cells (the host a filter and a column), then the report."""
    parts = [Part(hr.name, hr.run.records, hr.rows, hr.run.budgets, run_goals(hr.run.records, None)) for hr in runs]
    page_title = title(info, runs)
    return render_page(page_title, explorer_data(page_title, parts), merged_document(info, runs, with_plots=True))


def report_merged(out: Path, p99_ms: float | None = None, memory_mb: float | None = None) -> list[Path]:
    """Write RESULTS.md, results.csv, results.json and results.html of a merged folder."""
    out = Path(out)
    info, runs = read_hosts(out, p99_ms, memory_mb)
    outputs = {
        "RESULTS.md": render_markdown(merged_document(info, runs, with_plots=False)),
        "results.csv": render_csv(runs),
        "results.json": render_json(info, runs),
        "results.html": merged_html(info, runs),
    }
    paths = []
    for name in report.REPORT_FILES:
        path = out / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(outputs[name], encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths
