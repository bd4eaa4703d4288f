"""The recommendation as the report publishes it: the question, the set of cells that cannot be
told apart from the best (``recommend``, the analysis), how it was chosen, and a plot of the candidates."""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.matrix.analysis.launches import describe_noise, launch_noise
from forkwise.matrix.analysis.recommend import (
    FAMILY_ALPHA,
    Candidates,
    Point,
    Served,
    candidates,
    contenders,
    critical_z,
    questions,
    served_label,
)
from forkwise.matrix.publish.document import (
    MISSING,
    Block,
    Heading,
    Para,
    Plot,
    Table,
    fmt_fixed,
    fmt_ms,
    new_figure,
    png,
    strategy_colors,
)
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.types import CellRecord

# --- the section -----------------------------------------------------------------------------


def _pss(record: CellRecord) -> str:
    return MISSING if record.memory is None else fmt_fixed(1)(record.memory.total_pss_mb)


def contender_row(point: Point, best: Point) -> tuple[str, ...]:
    level, record = point.level, point.record
    behind = (best.level.rps - level.rps) / best.level.rps if best.level.rps else 0.0
    return (
        record.cell_id, str(level.concurrency),
        f"{fmt_fixed(1)(level.rps)} ± {fmt_fixed(1)(point.stderr)}" if point.stderr else
        f"{fmt_fixed(1)(level.rps)} (no spread measured)",
        "best" if point is best else f"-{behind:.1%}",
        fmt_ms(level.latency.p99_ms), _pss(record),
        MISSING if record.cold_start_s is None else fmt_fixed(2)(record.cold_start_s),
    )


def _excluded_sentence(found: Candidates) -> str:
    parts = [f"{len(cells)} {why}" for cells, why in (
        (found.over_memory, "over the memory budget"),
        (found.memory_unknown, "without a memory measurement"),
        (found.over_p99, "with no level within the p99 budget"),
    ) if cells]
    return ("; out: " + ", ".join(parts)) if parts else ""


def method_sentence(found: Candidates, chosen: Sequence[Point], noise: dict[int, float]) -> str:
    k = len(found.points)
    z = critical_z(k - 1)
    noise_text = describe_noise(noise)
    return (f"Each OK cell other than a control is taken at its load level with the most throughput whose p99 is "
            f"within the budget; {k} cells qualify{_excluded_sentence(found)}. A cell is in the set unless another "
            f"is ahead of it by more than {z:.2f} standard errors of their difference (one-sided, Bonferroni over "
            f"{max(k - 1, 0)} comparisons): the set holds the cell with the truly most throughput with "
            f"{1 - FAMILY_ALPHA:.0%} confidence. Standard error: the level's spread, or this run's launch noise "
            f"({noise_text}) if larger, over the square root of its launches. Any cell of the set is the answer; "
            f"choose among them by memory, cold start or p99.")


def recommendation_section(records: Sequence[CellRecord], budgets: Budgets, with_plots: bool) -> list[Block]:
    blocks: list[Block] = [
        Heading("Recommendation"),
        Para(f"The most throughput with {budgets.describe()}, for each model the run served. Set the budgets in "
             "the profile ([recommend] p99_ms, memory_mb) or with `forkwise matrix`/`forkwise report` --p99-ms "
             "and --memory-mb.", "The question:"),
    ]
    asked = questions(records)
    if not asked:
        return blocks + [Para("No OK cell other than a control has load data: this run recommends nothing.",
                              "Answer:")]
    noise = launch_noise(records)
    for what in asked:
        if len(asked) > 1:
            blocks.append(Heading(served_label(what), 3))
        blocks += answer_blocks(candidates(records, budgets, what), budgets, noise, what, with_plots)
    if not noise:
        blocks.append(Para("this run measured no launch-to-launch noise (each cell was launched once), so a "
                           "set reflects only the spread within each launch and is likely too narrow.",
                           "Caution:"))
    return blocks


def answer_blocks(found: Candidates, budgets: Budgets, noise: dict[int, float], what: Served,
                  with_plots: bool) -> list[Block]:
    if not found.points:
        return [Para(f"No cell serving {served_label(what)} has a load level within the budgets"
                     f"{_excluded_sentence(found)}: this run recommends nothing for it.", "Answer:")]
    chosen = contenders(found.points)
    best = found.points[0]
    blocks: list[Block] = [
        Para(f"{len(chosen)} of {len(found.points)} cells serving {served_label(what)} cannot be told apart from "
             f"the one with the most throughput ({best.record.cell_id}):", "Answer:"),
        Table(("cell", "concurrency", "rps ± standard error", "behind the best", "p99 ms", "PSS MB", "cold start s"),
              tuple(contender_row(p, best) for p in chosen)),
        Para(method_sentence(found, chosen, noise), "How:"),
    ]
    if with_plots:
        blocks.append(candidates_plot(found, chosen, budgets))
    return blocks


def candidates_plot(found: Candidates, chosen: Sequence[Point], budgets: Budgets) -> Plot:
    """Throughput against p99 of every level of the candidates; their operating points marked,
    the set filled, the p99 budget a dashed line."""
    records = [p.record for p in found.points]
    colors = strategy_colors(records)
    in_set = {id(p) for p in chosen}
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    for point in found.points:
        levels = sorted(point.record.load, key=lambda lv: lv.concurrency)
        color = colors[point.record.strategy]
        ax.plot([lv.latency.p99_ms for lv in levels], [lv.rps for lv in levels], color=color, alpha=0.25,
                linewidth=0.8)
        ax.errorbar([point.level.latency.p99_ms], [point.level.rps], yerr=[point.stderr], color=color,
                    marker="o", markersize=6, capsize=2,
                    markerfacecolor=color if id(point) in in_set else "white")
    for strategy, color in colors.items():
        ax.plot([], [], color=color, marker="o", linestyle="", label=strategy)
    ax.axvline(budgets.p99_ms, color="black", linestyle="--", linewidth=1, label=f"p99 budget {budgets.p99_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("requests/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return Plot("Throughput against p99 latency of the candidates within the memory budget: faint lines join "
                "each cell's levels; a marker is its operating point (± standard error), filled when it is in "
                "the recommended set", png(fig))
