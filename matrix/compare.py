"""Compare two runs cell by cell, and say which differences are more than noise.

Cells are matched by ``cell_id`` and concurrency. For each level measured in both runs:

- its spread is the larger of its own standard deviation (over every sample of every
  launch) and its run's pooled launch-to-launch noise at that concurrency
  (forkwise.matrix.launches), scaled to its rps;
- z is the difference of the two means over its standard error,
  sqrt(spread_a^2 / launches_a + spread_b^2 / launches_b);
- a run shift is factored out first: the median of rps_b / rps_a over every level OK in both
  runs (when at least MIN_SHIFT_CELLS cells contribute; else levels are judged raw), so a
  machine that runs faster or slower as a whole does not flag every cell, and a change that
  hits every cell alike shows as the shift, which the summary prints.

A comparison of two runs tests a hundred levels at once, so "significant" is decided for the
whole family with Holm's method at FAMILY_ALPHA: when nothing changed, the chance that any
level at all is flagged is 5%. A level with no spread on either side is flagged past a 5%
difference instead. A verdict that changed is always flagged.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from forkwise.errors import RecordError
from forkwise.matrix.launches import combine_all, describe_noise, launch_noise
from forkwise.matrix.records import RECORDS_FILE, CellRecord, LoadLevel, Verdict, read_records

RESULTS_FILE = "results.json"
FAMILY_ALPHA = 0.05  # chance that any level is flagged when nothing changed
ZERO_SPREAD_THRESHOLD = 0.05  # relative, used when both spreads are 0
MIN_SHIFT_CELLS = 4  # cells OK in both runs needed to measure a run shift

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
    vs_control_a: float | None = None  # rps / the same run's control rps at this level (shown, not judged)
    vs_control_b: float | None = None
    adjusted_delta_pct: float | None = None  # (b / run shift - a) / a, in percent: what is judged
    z: float | None = None  # adjusted difference / its standard error; None: no spread on either side
    verdict_changed: bool = False


@dataclass(frozen=True)
class Judgement:
    """What applies to every level of one comparison."""

    shift: float | None = None  # run b's rps are divided by this before judging; None: judged raw
    shift_levels: int = 0  # levels the shift is the median of
    noise: tuple[Noise, Noise] = ({}, {})


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


def z_score(a: LoadLevel, b: LoadLevel, judgement: Judgement = Judgement()) -> float | None:
    """(b / shift - a) over the standard error of that difference of means; None when neither has a spread."""
    scale = judgement.shift or 1.0
    sa, sb = spread(a, judgement.noise[0]), spread(b, judgement.noise[1]) / scale
    se = math.sqrt(sa**2 / max(1, len(a.launch_rps)) + sb**2 / max(1, len(b.launch_rps)))
    return None if se == 0 else (b.rps / scale - a.rps) / se


def p_value(z: float) -> float:
    """Two-sided, under a normal distribution."""
    return math.erfc(abs(z) / math.sqrt(2))


def holm(p_values: list[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Holm's step-down method: which of the hypotheses to reject, family-wise error <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def _levels(record: CellRecord | None) -> dict[int, LoadLevel]:
    return {} if record is None else {lv.concurrency: lv for lv in record.load}


def _ok_levels(record: CellRecord | None) -> dict[int, LoadLevel]:
    return _levels(record) if record is not None and record.verdict.ok else {}


def run_shift(cells_a: dict[str, CellRecord], cells_b: dict[str, CellRecord]) -> tuple[float | None, int]:
    """Median rps_b / rps_a over the levels OK in both runs, and how many levels that is; the
    shift is None when fewer than MIN_SHIFT_CELLS cells are OK with load in both runs."""
    ratios, cells = [], set()
    for cid, a in cells_a.items():
        levels_b = _ok_levels(cells_b.get(cid))
        for concurrency, la in _ok_levels(a).items():
            lb = levels_b.get(concurrency)
            if lb is not None and la.rps > 0 and lb.rps > 0:
                ratios.append(lb.rps / la.rps)
                cells.add(cid)
    if len(cells) < MIN_SHIFT_CELLS:
        return None, len(ratios)
    return statistics.median(ratios), len(ratios)


ControlIndex = dict[tuple, LoadLevel]


def control_levels(records: Iterable[CellRecord]) -> ControlIndex:
    index: ControlIndex = {}
    for r in records:
        if r.strategy == "control" and r.verdict.ok:
            for lv in r.load:
                if lv.rps > 0:
                    index[(r.server, r.workers, r.model, r.device, r.scenario, lv.concurrency)] = lv
    return index


def _vs_control(record: CellRecord | None, level: LoadLevel | None, index: ControlIndex) -> float | None:
    if record is None or level is None:
        return None
    control = index.get((record.server, record.workers, record.model, record.device, record.scenario,
                         level.concurrency))
    return None if control is None else round(level.rps / control.rps, 3)


def delta_pct(rps_a: float | None, rps_b: float | None) -> float | None:
    if rps_a is None or rps_b is None or rps_a == 0:
        return None
    return (rps_b - rps_a) / rps_a * 100.0


def _verdict_note(a: CellRecord | None, b: CellRecord | None) -> tuple[bool, str]:
    if a is None:
        return False, "only in run b"
    if b is None:
        return False, "only in run a"
    if a.verdict is not b.verdict:
        return True, f"verdict changed: {a.verdict.value} -> {b.verdict.value}"
    return False, ""


def compare_level(cell_id: str, concurrency: int, a: CellRecord | None, b: CellRecord | None,
                  judgement: Judgement = Judgement(),
                  controls: tuple[ControlIndex, ControlIndex] = ({}, {})) -> Comparison:
    """One level, with its z; whether the difference is significant is decided for the whole
    family of levels by ``compare`` (here only a changed verdict is)."""
    level_a = _levels(a).get(concurrency)
    level_b = _levels(b).get(concurrency)
    verdict_changed, note = _verdict_note(a, b)
    z = None
    if level_a is not None and level_b is not None:
        z = z_score(level_a, level_b, judgement)
    elif a is not None and b is not None and not note:
        note = f"level measured only in run {'a' if level_a is not None else 'b'}"
    rps_a = None if level_a is None else level_a.rps
    rps_b = None if level_b is None else level_b.rps
    adjusted = None if rps_b is None else rps_b / (judgement.shift or 1.0)
    return Comparison(
        cell_id=cell_id,
        concurrency=concurrency,
        rps_a=rps_a,
        rps_b=rps_b,
        delta_pct=delta_pct(rps_a, rps_b),
        significant=verdict_changed,
        verdict_a=None if a is None else a.verdict,
        verdict_b=None if b is None else b.verdict,
        note=note,
        vs_control_a=_vs_control(a, level_a, controls[0]),
        vs_control_b=_vs_control(b, level_b, controls[1]),
        adjusted_delta_pct=delta_pct(rps_a, adjusted),
        z=None if z is None else round(z, 2),
        verdict_changed=verdict_changed,
    )


def compare_cell(cell_id: str, a: CellRecord | None, b: CellRecord | None, judgement: Judgement = Judgement(),
                 controls: tuple[ControlIndex, ControlIndex] = ({}, {})) -> list[Comparison]:
    concurrencies = sorted(set(_levels(a)) | set(_levels(b)))
    if concurrencies:
        return [compare_level(cell_id, c, a, b, judgement, controls) for c in concurrencies]
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
            verdict_changed=verdict_changed,
        )
    ]


def _by_cell(records: Iterable[CellRecord]) -> dict[str, CellRecord]:
    return {r.cell_id: r for r in combine_all(records)}


def judgement_for(a: list[CellRecord], b: list[CellRecord]) -> Judgement:
    """The run shift and both runs' launch noise: what every level of a comparison is judged with."""
    cells_a, cells_b = _by_cell(a), _by_cell(b)
    shift, levels = run_shift(cells_a, cells_b)
    return Judgement(shift=shift, shift_levels=levels,
                     noise=(launch_noise(cells_a.values()), launch_noise(cells_b.values())))


def judge(comps: list[Comparison]) -> list[Comparison]:
    """Decide "significant" for every level at once: Holm over the levels with a z, the 5% rule
    for levels with no spread on either side, and any changed verdict."""
    tested = [i for i, c in enumerate(comps) if c.z is not None]
    rejected = dict(zip(tested, holm([p_value(comps[i].z) for i in tested])))
    judged = []
    for i, c in enumerate(comps):
        if c.z is not None:
            beyond = rejected[i]
        else:
            beyond = c.adjusted_delta_pct is not None and abs(c.adjusted_delta_pct) > ZERO_SPREAD_THRESHOLD * 100
        judged.append(dataclasses.replace(c, significant=c.verdict_changed or beyond))
    return judged


def compare(a: list[CellRecord], b: list[CellRecord], judgement: Judgement | None = None) -> list[Comparison]:
    """Every cell of either run, in run a's order then run b's new cells, one row per concurrency."""
    cells_a, cells_b = _by_cell(a), _by_cell(b)
    judgement = judgement or judgement_for(a, b)
    order = list(cells_a) + [cid for cid in cells_b if cid not in cells_a]
    controls = (control_levels(cells_a.values()), control_levels(cells_b.values()))
    return judge([c for cid in order
                  for c in compare_cell(cid, cells_a.get(cid), cells_b.get(cid), judgement, controls)])


# --- rendering -----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_verdicts(c: Comparison) -> str:
    a = "-" if c.verdict_a is None else c.verdict_a.value
    b = "-" if c.verdict_b is None else c.verdict_b.value
    return a if a == b else f"{a} -> {b}"


def comparison_row(c: Comparison) -> list[str]:
    def pct(value: float | None) -> str:
        return _fmt(value, "+.1f") + ("%" if value is not None else "")

    return [
        c.cell_id,
        "-" if c.concurrency is None else str(c.concurrency),
        _fmt(c.rps_a, ",.1f"),
        _fmt(c.rps_b, ",.1f"),
        pct(c.delta_pct),
        pct(c.adjusted_delta_pct),
        _fmt(c.z, "+.1f"),
        _fmt(c.vs_control_a, ".3f") + " / " + _fmt(c.vs_control_b, ".3f") if c.vs_control_a is not None else "-",
        "yes" if c.significant else "n.s.",
        _fmt_verdicts(c),
        c.note.replace("|", "\\|"),
    ]


def summary_lines(comps: list[Comparison], judgement: Judgement) -> str:
    measured = [c for c in comps if c.concurrency is not None and c.rps_a is not None and c.rps_b is not None]
    both_ok = [c for c in measured if c.verdict_a is c.verdict_b is Verdict.OK]
    flagged = [c for c in both_ok if c.significant]
    one_run_only = {c.cell_id for c in comps if c.verdict_a is None or c.verdict_b is None}
    text = (f"{len(flagged)} of {len(both_ok)} measured levels of cells OK in both runs differ by more than "
            f"the noise (Holm's method over every level, family-wise {FAMILY_ALPHA:.0%}); "
            f"{len({c.cell_id for c in comps if c.verdict_changed})} cells changed verdict"
            + (f"; {len(one_run_only)} cells ran in one run only." if one_run_only else "."))
    if judgement.shift is not None:
        text += (f" Run b as a whole ran at {judgement.shift:.3f}x run a (the median ratio over "
                 f"{judgement.shift_levels} levels OK in both); each level is judged with run b divided by it "
                 f"(the 'beyond shift' column).")
    else:
        text += f" Fewer than {MIN_SHIFT_CELLS} cells are OK in both runs: no run shift is measured; levels are judged raw."
    return (text + "\n\nLaunch-to-launch noise of each run (relative stdev of rps between launches of the same "
            "cell, pooled over its OK cells), the floor of every level's spread:\n"
            f"- run a: {describe_noise(judgement.noise[0])}\n- run b: {describe_noise(judgement.noise[1])}")


def render_comparison(comps: list[Comparison], judgement: Judgement = Judgement()) -> str:
    """A summary, then a Markdown table; a difference within the noise is marked n.s. (not significant)."""
    headers = ["cell", "concurrency", "rps a", "rps b", "delta", "beyond shift", "z", "vs control a / b",
               "significant", "verdict", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(comparison_row(c)) + " |" for c in comps]
    if not comps:
        lines.append("| " + " | ".join(["no cells"] + [""] * (len(headers) - 1)) + " |")
    return summary_lines(comps, judgement) + "\n\n" + "\n".join(lines) + "\n"
