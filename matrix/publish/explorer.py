"""The data of the interactive results.html (publishing): every row of the flat table, every cell's
evidence, the recommendation and the goals, as JSON the page embeds (``explorer_page`` writes the page).

Everything the page shows is decided here, by the analysis: the rows are ``report_table.table_rows``
with each value's text as the tables format it, the recommended set comes from ``analysis.recommend``,
the goals from ``analysis.goals``, the filter dimensions from the axes' declaration (``axes()``) plus
the verdict and, in a merged report, the host. The page's JavaScript only filters, sorts and plots.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forkwise.checks import INT
from forkwise.matrix.analysis import finalists as finalists_analysis
from forkwise.matrix.analysis.goals import Goal, profile_label
from forkwise.matrix.analysis.ordering import server_order, strategy_order
from forkwise.matrix.analysis.recommend import candidates, contenders, questions, served_label
from forkwise.matrix.publish.document import MISSING, fmt_fixed, fmt_int, fmt_ratio, fmt_spread, fmt_text
from forkwise.matrix.publish.finalists_report import answer_text
from forkwise.matrix.publish.recommend_report import contender_row
from forkwise.matrix.publish.report_table import column
from forkwise.matrix.records.axes import Axis, axes
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.types import CellRecord, Verdict

# The measures the explorer's table shows after the cell, its axes and its verdict.
MEASURES = ("concurrency", "rps", "ratio_to_control", "p50_ms", "p99_ms", "errors", "total_pss_mb", "cold_start_s")
ALWAYS_SHOWN = ("strategy", "server")  # axis columns shown even where every row has the same value
MARKS = "marks"  # the column naming the recommended rows and the goals judged on them
RECOMMENDATION_HEADERS = ("cell", "concurrency", "rps ± standard error", "behind the best", "p99 ms", "PSS MB",
                          "cold start s")


@dataclass(frozen=True)
class Part:
    """What the page shows of one host of a merged folder, or of the whole run (host None)."""

    host: str | None
    records: Sequence[CellRecord]  # combined: one per cell
    rows: Sequence[dict[str, Any]]  # report_table.table_rows(records)
    budgets: Budgets
    goals: Sequence[Goal]
    finalists: dict[str, Any] | None = None  # the run's finalists stage (finalists.json), when it had one


def explorer_data(title: str, parts: Sequence[Part]) -> dict[str, Any]:
    """The JSON the page embeds."""
    merged = any(p.host is not None for p in parts)
    cells: list[dict[str, Any]] = []
    index: dict[tuple[str, str], int] = {}
    for part in parts:
        for record in part.records:
            index[(part.host or "", record.cell_id)] = len(cells)
            cells.append(cell_evidence(record, part.host))
    recommendations, goals, rows = [], [], []
    for part in parts:
        found, marks = recommendation_data(part, index)
        recommendations += found
        goals += [goal_data(g, part.host) for g in part.goals]
        rows += [row_data(row, part, index, marks) for row in part.rows]
    shown = [a for a in axes() if a.name in ALWAYS_SHOWN or len({r["t"][a.name] for r in rows}) > 1]
    return {
        "title": title,
        "hosts": [p.host for p in parts if p.host is not None],
        "dimensions": dimensions(rows, merged),
        "columns": table_columns(shown, merged),
        "same": [[a.column, rows[0]["t"][a.name]] for a in axes() if a not in shown] if rows else [],
        "rows": rows,
        "cells": cells,
        "recommendations": recommendations,
        "recommendation_headers": list(RECOMMENDATION_HEADERS),
        "goals": goals,
        "budgets": [{"host": p.host or "", "p99_ms": p.budgets.p99_ms, "text": p.budgets.describe()} for p in parts],
        "colour_by": "strategy",
    }


# --- rows and columns --------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _text(key: str, row: dict[str, Any]) -> str:
    if key == "rps" and row["rps"] is not None:
        return fmt_spread(row["rps"], row["rps_stdev"], row["rps_sample_count"])
    return column(key).fmt(row[key])


def row_data(row: dict[str, Any], part: Part, index: dict[tuple[str, str], int],
             marks: dict[tuple[str, int | None], str]) -> dict[str, Any]:
    """One row of the page: its raw values (sorting, plotting) and texts (shown, filtered on)."""
    keys = ("cell_id", *(a.name for a in axes()), "verdict", *MEASURES)
    values = {k: _json_value(row[k]) for k in keys}
    texts = {k: _text(k, row) for k in keys}
    if part.host is not None:
        values["host"] = texts["host"] = part.host
    rec = marks.get((row["cell_id"], row["concurrency"]), "")
    judged = [g.number for g in part.goals if _row_label(row) in g.cells and _unique_label(row, part)]
    mark_text = ", ".join(([f"★ {rec}"] if rec else []) + [f"goal {n}" for n in judged])
    values[MARKS], texts[MARKS] = mark_text or None, mark_text or MISSING
    p99 = row["p99_ms"]
    return {"cell": index[(part.host or "", row["cell_id"])], "v": values, "t": texts, "rec": rec,
            "goals": judged, "point": row["rps"] is not None and p99 is not None and p99 > 0}


def _row_label(row: dict[str, Any]) -> str:
    """The goals name the cells they were judged on by their profile label (strategy, server, workers,
    model, concurrency)."""
    if row["concurrency"] is None:
        return ""
    return profile_label(row["strategy"], row["server"], row["workers"], row["model"], row["concurrency"])


def _unique_label(row: dict[str, Any], part: Part) -> bool:
    """A goal's label names this row only where no other row of its host has the same label."""
    label = _row_label(row)
    return sum(1 for other in part.rows if _row_label(other) == label) == 1


def table_columns(shown: Sequence[Axis], merged: bool) -> list[dict[str, Any]]:
    cols = [{"key": "cell_id", "title": column("cell_id").title, "numeric": False}]
    if merged:
        cols.append({"key": "host", "title": "host", "numeric": False})
    cols += [{"key": a.name, "title": a.column, "numeric": a.kind is INT} for a in shown]
    cols.append({"key": "verdict", "title": "verdict", "numeric": False})
    cols += [{"key": k, "title": "rps ± stdev" if k == "rps" else column(k).title, "numeric": True} for k in MEASURES]
    cols.append({"key": MARKS, "title": "recommended, goals", "numeric": False})
    return cols


def dimensions(rows: Sequence[dict[str, Any]], merged: bool) -> list[dict[str, Any]]:
    """The filters: the verdict, every axis (declared in ``axes()``), and the host of a merged report;
    each with its values as the rows show them, in the report's order, and how many rows have each."""
    dims = [("verdict", "verdict"), *((a.name, a.column) for a in axes()), *([("host", "host")] if merged else [])]
    found = []
    for key, label in dims:
        seen: dict[str, Any] = {}
        for row in rows:
            seen.setdefault(row["t"][key], row["v"][key])
        values = sorted(seen, key=lambda text: _value_order(key, seen[text]))
        counts = {text: sum(1 for r in rows if r["t"][key] == text) for text in values}
        found.append({"key": key, "label": label, "values": [[v, counts[v]] for v in values]})
    return found


def _value_order(key: str, raw: Any) -> tuple:
    canonical = {"verdict": [v.value for v in Verdict], "strategy": list(strategy_order()),
                 "server": list(server_order())}.get(key)
    if canonical is not None:
        return (canonical.index(raw) if raw in canonical else len(canonical), str(raw))
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return (0, raw, "")
    return (0, 0, str(raw))  # the rows' order otherwise (sorted is stable)


# --- a cell's evidence ---------------------------------------------------------------------------


def cell_evidence(record: CellRecord, host: str | None) -> dict[str, Any]:
    """What the page shows when a cell is chosen: its axes and measures, findings, timings, the server
    log's telling lines and tail, a HANG's stacks, the database server's log lines."""
    ev = record.evidence
    facts = [[a.column, (fmt_int if a.kind is INT else fmt_text)(record.cell[a.name])] for a in axes()]
    facts += [
        ["verdict", record.verdict.value],
        ["launches", fmt_int(record.launches)],
        ["verification", f"{record.ok} of {record.requests} requests answered correctly"],
        ["cold start s", fmt_fixed(2)(record.cold_start_s)],
        ["all warm s", fmt_fixed(2)(record.warm_all_s)],
        ["PSS MB", fmt_fixed(1)(record.memory.total_pss_mb if record.memory else None)],
    ]
    if record.disruption is not None:
        d = record.disruption
        facts += [["event", d.event or MISSING], ["recovery s", fmt_fixed(2)(d.recovery_s)],
                  ["failed requests", fmt_int(d.failed.total)]]
    return {
        "id": record.cell_id, "host": host or "", "verdict": record.verdict.value, "facts": facts,
        "findings": list(ev.findings),
        "timings": [[name, fmt_fixed(2)(seconds)] for name, seconds in ev.timings_s.items()],
        "highlights": list(ev.log_highlights), "tail": ev.log_tail.rstrip("\n"), "stacks": list(ev.stacks),
        "db_log": list(record.db_server_log),
    }


# --- the recommendation and the goals ------------------------------------------------------------


def recommendation_data(part: Part, index: dict[tuple[str, str], int]
                        ) -> tuple[list[dict[str, Any]], dict[tuple[str, int | None], str]]:
    """Each question the host's run answers, with the set of cells that cannot be told apart from the
    best (``recommend``); and the rows it marks, (cell, concurrency) -> "best" or "in set"."""
    found: list[dict[str, Any]] = []
    marks: dict[tuple[str, int | None], str] = {}
    host = part.host or ""
    asked = questions(part.records)
    if not asked:
        found.append({"host": host, "question": "", "set": [],
                      "answer": "No OK cell other than a control has load data: nothing is recommended."})
    for what in asked:
        points = candidates(part.records, part.budgets, what).points
        if not points:
            found.append({"host": host, "question": served_label(what), "set": [],
                          "answer": "No cell has a load level within the budgets: nothing is recommended."})
            continue
        chosen, best = contenders(points), points[0]
        for p in chosen:
            marks[(p.record.cell_id, p.level.concurrency)] = "best" if p is best else "in set"
        answer = (f"{len(chosen)} of {len(points)} cells cannot be told apart from the one with the most "
                  f"throughput ({best.record.cell_id}).")
        picked = finalists_answer(part.finalists, served_label(what), marks)
        found.append({
            "host": host, "question": served_label(what),
            "answer": f"{picked} The passes alone: {answer}" if picked else answer,
            "set": [{"cell": index[(host, p.record.cell_id)], "best": p is best, "row": list(contender_row(p, best))}
                    for p in chosen],
        })
    return found, marks


def finalists_answer(data: dict[str, Any] | None, question: str, marks: dict[tuple[str, int | None], str]) -> str:
    """The finalists' answer to a question (``analysis.finalists``), marking its top set's rows; ""
    when the run ranked no finalists for it."""
    ranking = finalists_analysis.ranked(data).get(question) if data else None
    if data is None or ranking is None:
        return ""
    asked = next(q for q in data["questions"] if q["served"] == question)
    for cell in ranking.top_set:
        marks[(cell, data["concurrency"])] = "finalist: best" if cell == ranking.best else "finalist: tied"
    said = answer_text(ranking, asked["stopped"])
    return f"Finalists measured interleaved at concurrency {data['concurrency']}: {said}"


def goal_data(goal: Goal, host: str | None) -> dict[str, Any]:
    return {"host": host or "", "number": goal.number, "goal": goal.goal, "measured": goal.measured,
            "ratio": fmt_ratio(goal.ratio), "target": goal.target, "result": goal.result,
            "met": goal.met}

