"""The report's Soak section: every soak cell's growth, fitted, in a table; in results.html, a plot per
cell of its total RSS over time with the fitted line (forkwise.matrix.records.soak). Verdicts are the
records' own (forkwise.matrix.verdicts); this only shows."""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.matrix.analysis.ordering import cell_order
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Plot, Table, fmt_int, new_figure, png
from forkwise.matrix.records.soak import (
    CONNS_ALLOWANCE_PER_10MIN,
    FDS_ALLOWANCE_PER_10MIN,
    RSS_BOUND_PCT_PER_10MIN,
    Growth,
    Soak,
)
from forkwise.matrix.records.types import CellRecord


def soak_cells(records: Sequence[CellRecord]) -> list[CellRecord]:
    return sorted((r for r in records if r.soak is not None), key=lambda r: (*cell_order(r), r.cell_id))


def growth_text(g: Growth | None, unit: str, not_fitted: str = "too short to fit") -> str:
    """"+1.2% (-0.4 to +2.8) per 10 min; +0.3% per 10k requests"."""
    if g is None:
        return not_fitted
    return (f"{g.per_10min:+,.1f}{unit} ({g.per_10min_low:+,.1f} to {g.per_10min_high:+,.1f}) per 10 min; "
            f"{g.per_10k_requests:+,.1f}{unit} per 10k requests")


def _p99(soak: Soak, index: int) -> str:
    kept = soak.intervals[soak.warmup_intervals:] or soak.intervals
    value = kept[index].p99_ms if kept else None
    return MISSING if value is None else f"{value:.1f}"


def soak_row(record: CellRecord) -> tuple[str, ...]:
    soak = record.soak
    assert soak is not None
    sqlite = bool(soak.intervals) and soak.intervals[0].db_connections is None
    return (
        record.cell_id, record.verdict.value, f"{soak.duration_s:g} s", f"{soak.rate_rps:g} ({soak.fraction:g} x "
        f"{soak.capacity_rps:g})", fmt_int(soak.requests), growth_text(soak.rss, "%"), growth_text(soak.fds, ""),
        "not applicable (SQLite)" if sqlite else growth_text(soak.db_connections, ""),
        f"{_p99(soak, 0)} / {_p99(soak, -1)}", fmt_int(max(0, soak.rows_expected - soak.rows_found)),
    )


def rss_plot(record: CellRecord) -> Plot:
    """Total RSS (and PSS) per interval, the warm-up marked, with the line fitted after it."""
    soak = record.soak
    assert soak is not None
    ts = [i.t_s for i in soak.intervals]
    fig = new_figure(5.0, 3.0)
    ax = fig.subplots()
    ax.plot(ts, [i.total_rss_mb for i in soak.intervals], marker="o", markersize=3, label="total RSS")
    ax.plot(ts, [i.total_pss_mb for i in soak.intervals], marker=".", linestyle=":", label="total PSS")
    if soak.warmup_intervals and len(ts) > soak.warmup_intervals:
        ax.axvspan(0, ts[soak.warmup_intervals - 1], color="#ddd", alpha=0.6, label="warm-up (not fitted)")
    g = soak.rss
    if g is not None:
        kept = ts[soak.warmup_intervals:]
        slope_per_s = g.per_10min / 100 * g.start / 600
        ax.plot(kept, [g.start + slope_per_s * (t - kept[0]) for t in kept], color="#D55E00",
                label=f"fit: {g.per_10min:+,.1f}% per 10 min")
    ax.set_xlabel("seconds of soak")
    ax.set_ylabel("MB, all processes")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return Plot(f"{record.cell_id} ({record.verdict.value}): memory over the soak, the line fitted after the "
                f"warm-up", png(fig))


def soak_section(records: Sequence[CellRecord], with_plots: bool) -> list[Block]:
    cells = soak_cells(records)
    if not cells:
        return []
    blocks: list[Block] = [Heading("Soak"), Para(
        "Each soak cell measured its own capacity (closed loop, 8 clients), then carried open-loop load (Poisson "
        "arrivals) at a share of it for the set time, sampling every process's RSS, PSS, USS, open file "
        "descriptors and database connections each interval. Growth: a least-squares line through the intervals "
        "after the warm-up (the first tenth, at least one interval), against time and against requests, with its "
        f"95% interval (Student's t). LEAK when the interval's lower bound is above {RSS_BOUND_PCT_PER_10MIN:g}% "
        f"of RSS, {FDS_ALLOWANCE_PER_10MIN:g} descriptors or {CONNS_ALLOWANCE_PER_10MIN:g} connections per 10 "
        "minutes. p99: of the first and last fitted intervals. Rows lost: the 200s' rows the table lacks.")]
    blocks.append(Table(
        ("cell", "verdict", "duration", "rate req/s (share x capacity)", "requests", "RSS growth", "fds growth",
         "connections growth", "p99 ms first / last", "rows lost"),
        tuple(soak_row(r) for r in cells)))
    if with_plots:
        blocks += [rss_plot(r) for r in cells]
    return blocks
