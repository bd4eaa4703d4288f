"""Compare two runs cell by cell, and say which differences are more than noise.

Cells are matched by ``cell_id`` and concurrency. A throughput difference counts as
significant only if it exceeds twice the combined spread of the two measurements,
|rps_a - rps_b| > 2 * sqrt(spread_a^2 + spread_b^2), where a level's spread is the larger
of its own standard deviation (over every sample of every launch) and its run's pooled
launch-to-launch noise at that concurrency (forkwise.matrix.launches), scaled to its rps.
The threshold is 2.8 standard errors of the difference of two 2-launch means: about one
false flag in 200 comparisons at normal noise. When neither side has any spread a 5%
threshold stands in. A verdict that changed is always flagged.

A cell that has a control cell in both runs (same server, workers, model, device,
concurrency) is judged on its throughput relative to that control, with both spreads
propagated, so a machine that is faster or slower as a whole between the runs does not
flag every cell; the control cells, the yardstick, are judged on their raw throughput.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from forkwise.errors import RecordError
from forkwise.matrix.launches import combine_all, launch_noise
from forkwise.matrix.records import RECORDS_FILE, CellRecord, LoadLevel, Verdict, read_records

RESULTS_FILE = "results.json"
NOISE_SIGMAS = 2.0
ZERO_SPREAD_THRESHOLD = 0.05  # relative, used when both spreads are 0

Noise = dict[int, float]  # concurrency -> relative launch-to-launch stdev of the run


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
    vs_control_a: float | None = None  # rps / the same run's control rps at this level
    vs_control_b: float | None = None


def load_run(path: Path) -> list[CellRecord]:
    """The records of one run, one per cell: dir/results.json if present, else dir/records.jsonl
    (its per-launch records combined), or such a file itself."""
    path = Path(path)
    if path.is_file():
        return combine_all(read_records(path))
    for name in (RESULTS_FILE, RECORDS_FILE):
        if (path / name).exists():
            return combine_all(read_records(path / name))
    raise RecordError(f"{path}: neither {RESULTS_FILE} nor {RECORDS_FILE} found")


def spread(level: LoadLevel, noise: Noise) -> float:
    """A level's run-to-run spread in rps: its own, or its run's pooled launch noise, whichever is larger."""
    return max(level.rps_stdev, noise.get(level.concurrency, 0.0) * level.rps)


def _differs(qa: float, sa: float, qb: float, sb: float) -> bool:
    if sa == 0 and sb == 0:
        return abs(qa - qb) > ZERO_SPREAD_THRESHOLD * max(abs(qa), abs(qb))
    return abs(qa - qb) > NOISE_SIGMAS * math.hypot(sa, sb)


def rps_significant(a: LoadLevel, b: LoadLevel, noise: tuple[Noise, Noise] = ({}, {})) -> bool:
    """Whether two measurements of one level differ by more than their noise."""
    return _differs(a.rps, spread(a, noise[0]), b.rps, spread(b, noise[1]))


def _relative(level: LoadLevel, control: LoadLevel, noise: Noise) -> tuple[float, float]:
    """rps / control rps, and its spread (relative spreads added in quadrature)."""
    ratio = level.rps / control.rps
    own = spread(level, noise) / level.rps if level.rps else 0.0
    return ratio, ratio * math.hypot(own, spread(control, noise) / control.rps)


def relative_significant(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return _differs(a[0], a[1], b[0], b[1])


ControlIndex = dict[tuple, LoadLevel]


def control_levels(records: Iterable[CellRecord]) -> ControlIndex:
    index: ControlIndex = {}
    for r in records:
        if r.strategy == "control" and r.verdict.ok:
            for lv in r.load:
                if lv.rps > 0:
                    index[(r.server, r.workers, r.model, r.device, r.scenario, lv.concurrency)] = lv
    return index


def _control_of(record: CellRecord | None, concurrency: int, index: ControlIndex) -> LoadLevel | None:
    if record is None or record.strategy == "control":
        return None
    return index.get((record.server, record.workers, record.model, record.device, record.scenario, concurrency))


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


def compare_level(cell_id: str, concurrency: int, a: CellRecord | None, b: CellRecord | None,
                  controls: tuple[ControlIndex, ControlIndex] = ({}, {}),
                  noise: tuple[Noise, Noise] = ({}, {})) -> Comparison:
    level_a = _levels(a).get(concurrency)
    level_b = _levels(b).get(concurrency)
    verdict_changed, note = _verdict_note(a, b)
    significant = verdict_changed
    rel_a = rel_b = None
    if level_a is not None and level_b is not None:
        control_a, control_b = _control_of(a, concurrency, controls[0]), _control_of(b, concurrency, controls[1])
        if control_a is not None and control_b is not None and level_a.rps > 0:
            rel_a, rel_b = _relative(level_a, control_a, noise[0]), _relative(level_b, control_b, noise[1])
            significant = significant or relative_significant(rel_a, rel_b)
        else:
            significant = significant or rps_significant(level_a, level_b, noise)
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
        vs_control_a=None if rel_a is None else round(rel_a[0], 3),
        vs_control_b=None if rel_b is None else round(rel_b[0], 3),
    )


def compare_cell(cell_id: str, a: CellRecord | None, b: CellRecord | None,
                 controls: tuple[ControlIndex, ControlIndex] = ({}, {}),
                 noise: tuple[Noise, Noise] = ({}, {})) -> list[Comparison]:
    concurrencies = sorted(set(_levels(a)) | set(_levels(b)))
    if concurrencies:
        return [compare_level(cell_id, c, a, b, controls, noise) for c in concurrencies]
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
    return {r.cell_id: r for r in combine_all(records)}


def compare(a: list[CellRecord], b: list[CellRecord]) -> list[Comparison]:
    """Every cell of either run, in run a's order then run b's new cells, one row per concurrency."""
    cells_a, cells_b = _by_cell(a), _by_cell(b)
    order = list(cells_a) + [cid for cid in cells_b if cid not in cells_a]
    controls = (control_levels(cells_a.values()), control_levels(cells_b.values()))
    noise = (launch_noise(cells_a.values()), launch_noise(cells_b.values()))
    return [c for cid in order for c in compare_cell(cid, cells_a.get(cid), cells_b.get(cid), controls, noise)]


def run_shift(comps: Iterable[Comparison]) -> float | None:
    """Median rps_b / rps_a over the levels measured OK in both runs: how much faster (> 1) or
    slower the whole of run b was; what the control-relative judgement factors out."""
    ratios = [c.rps_b / c.rps_a for c in comps
              if c.verdict_a is c.verdict_b is Verdict.OK and c.rps_a and c.rps_b is not None]
    return statistics.median(ratios) if ratios else None


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
        _fmt(c.vs_control_a, ".3f") + " / " + _fmt(c.vs_control_b, ".3f") if c.vs_control_a is not None else "-",
        "yes" if c.significant else "n.s.",
        _fmt_verdicts(c),
        c.note.replace("|", "\\|"),
    ]


def render_comparison(comps: list[Comparison], noises: tuple[Noise, Noise] | None = None) -> str:
    """A Markdown table; a difference within the noise is marked n.s. (not significant)."""
    headers = ["cell", "concurrency", "rps a", "rps b", "delta", "vs control a / b", "significant", "verdict", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(comparison_row(c)) + " |" for c in comps]
    if not comps:
        lines.append("| " + " | ".join(["no cells"] + [""] * (len(headers) - 1)) + " |")
    measured = [c for c in comps if c.concurrency is not None and c.rps_a is not None and c.rps_b is not None]
    both_ok = [c for c in measured if c.verdict_a is c.verdict_b is Verdict.OK]
    flagged = [c for c in both_ok if c.significant]
    summary = (f"{len(flagged)} of {len(both_ok)} measured levels of cells OK in both runs differ by more than "
               f"the noise; {len({c.cell_id for c in comps if c.verdict_a is not c.verdict_b})} cells changed verdict.")
    shift = run_shift(comps)
    if shift is not None:
        summary += (f" Run b as a whole ran at {shift:.2f}x run a (median over those levels); a cell with a "
                    f"control cell in both runs is judged relative to it, which factors that out.")
    noise_lines = [f"- run {side}: " + (", ".join(f"c{c} {v * 100:.1f}%" for c, v in n.items()) or
                                        "not measured (each cell launched once)")
                   for side, n in (("a", noises[0]), ("b", noises[1]))] if noises else []
    if noise_lines:
        summary += ("\n\nLaunch-to-launch noise of each run (relative stdev of rps between launches of the same "
                    "cell, pooled over its OK cells), the floor of every level's spread:\n" + "\n".join(noise_lines))
    return summary + "\n\n" + "\n".join(lines) + "\n"
