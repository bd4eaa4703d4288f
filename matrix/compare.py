"""Compare two runs cell by cell, and say which differences are more than noise.

Cells are matched by ``cell_id`` and concurrency. A throughput difference counts as
significant only if it exceeds twice the combined spread of the two measurements,
|rps_a - rps_b| > 2 * sqrt(stdev_a^2 + stdev_b^2); when neither run measured any spread
(both stdevs 0) a 5% threshold stands in. A verdict that changed is always flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from forkwise.errors import RecordError
from forkwise.matrix.records import RECORDS_FILE, CellRecord, LoadLevel, Verdict, read_records

RESULTS_FILE = "results.json"
NOISE_SIGMAS = 2.0
ZERO_SPREAD_THRESHOLD = 0.05  # relative, used when both stdevs are 0


@dataclass(frozen=True)
class Comparison:
    cell_id: str
    concurrency: int | None  # None: the cell's verification only (no load level on either side)
    rps_a: float | None
    rps_b: float | None
    delta_pct: float | None  # (b - a) / a, in percent
    significant: bool
    verdict_a: Verdict | None  # None: the cell is not in run a
    verdict_b: Verdict | None
    note: str = ""


def load_run(path: Path) -> list[CellRecord]:
    """The records of one run: dir/results.json if present, else dir/records.jsonl (or a file itself)."""
    path = Path(path)
    if path.is_file():
        return list(read_records(path))
    for name in (RESULTS_FILE, RECORDS_FILE):
        if (path / name).exists():
            return list(read_records(path / name))
    raise RecordError(f"{path}: neither {RESULTS_FILE} nor {RECORDS_FILE} found")


def rps_significant(a: LoadLevel, b: LoadLevel) -> bool:
    """Whether two measurements of one level differ by more than their noise."""
    diff = abs(a.rps - b.rps)
    if a.rps_stdev == 0 and b.rps_stdev == 0:
        base = max(abs(a.rps), abs(b.rps))
        return base > 0 and diff > ZERO_SPREAD_THRESHOLD * base
    return diff > NOISE_SIGMAS * math.hypot(a.rps_stdev, b.rps_stdev)


def delta_pct(rps_a: float | None, rps_b: float | None) -> float | None:
    if rps_a is None or rps_b is None or rps_a == 0:
        return None
    return (rps_b - rps_a) / rps_a * 100.0


def _levels(record: CellRecord | None) -> dict[int, LoadLevel]:
    return {} if record is None else {lv.concurrency: lv for lv in record.load}


def _verdict_note(a: CellRecord | None, b: CellRecord | None) -> tuple[bool, str]:
    if a is None:
        return False, "only in run b"
    if b is None:
        return False, "only in run a"
    if a.verdict is not b.verdict:
        return True, f"verdict changed: {a.verdict.value} -> {b.verdict.value}"
    return False, ""


def compare_level(cell_id: str, concurrency: int, a: CellRecord | None, b: CellRecord | None) -> Comparison:
    level_a = _levels(a).get(concurrency)
    level_b = _levels(b).get(concurrency)
    verdict_changed, note = _verdict_note(a, b)
    significant = verdict_changed
    if level_a is not None and level_b is not None:
        significant = significant or rps_significant(level_a, level_b)
    elif a is not None and b is not None and not note:
        note = f"level measured only in run {'a' if level_a is not None else 'b'}"
    rps_a = None if level_a is None else level_a.rps
    rps_b = None if level_b is None else level_b.rps
    return Comparison(
        cell_id=cell_id,
        concurrency=concurrency,
        rps_a=rps_a,
        rps_b=rps_b,
        delta_pct=delta_pct(rps_a, rps_b),
        significant=significant,
        verdict_a=None if a is None else a.verdict,
        verdict_b=None if b is None else b.verdict,
        note=note,
    )


def compare_cell(cell_id: str, a: CellRecord | None, b: CellRecord | None) -> list[Comparison]:
    concurrencies = sorted(set(_levels(a)) | set(_levels(b)))
    if concurrencies:
        return [compare_level(cell_id, c, a, b) for c in concurrencies]
    verdict_changed, note = _verdict_note(a, b)
    return [
        Comparison(
            cell_id=cell_id,
            concurrency=None,
            rps_a=None,
            rps_b=None,
            delta_pct=None,
            significant=verdict_changed,
            verdict_a=None if a is None else a.verdict,
            verdict_b=None if b is None else b.verdict,
            note=note,
        )
    ]


def _by_cell(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    return {r.cell_id: r for r in records}  # the last record of a cell wins


def compare(a: list[CellRecord], b: list[CellRecord]) -> list[Comparison]:
    """Every cell of either run, in run a's order then run b's new cells, one row per concurrency."""
    cells_a, cells_b = _by_cell(a), _by_cell(b)
    order = list(cells_a) + [cid for cid in cells_b if cid not in cells_a]
    return [c for cid in order for c in compare_cell(cid, cells_a.get(cid), cells_b.get(cid))]


# --- rendering -----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_verdicts(c: Comparison) -> str:
    a = "-" if c.verdict_a is None else c.verdict_a.value
    b = "-" if c.verdict_b is None else c.verdict_b.value
    return a if a == b else f"{a} -> {b}"


def comparison_row(c: Comparison) -> list[str]:
    return [
        c.cell_id,
        "-" if c.concurrency is None else str(c.concurrency),
        _fmt(c.rps_a, ",.1f"),
        _fmt(c.rps_b, ",.1f"),
        _fmt(c.delta_pct, "+.1f") + ("%" if c.delta_pct is not None else ""),
        "yes" if c.significant else "n.s.",
        _fmt_verdicts(c),
        c.note.replace("|", "\\|"),
    ]


def render_comparison(comps: list[Comparison]) -> str:
    """A Markdown table; a difference within the noise is marked n.s. (not significant)."""
    headers = ["cell", "concurrency", "rps a", "rps b", "delta", "significant", "verdict", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(comparison_row(c)) + " |" for c in comps]
    if not comps:
        lines.append("| " + " | ".join(["no cells"] + [""] * (len(headers) - 1)) + " |")
    return "\n".join(lines) + "\n"
