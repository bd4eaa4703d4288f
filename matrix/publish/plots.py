"""The HTML page's plots of a run: throughput against concurrency, memory and cold start, one
set per combination of workers, model, device, scenario and backend."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from forkwise.matrix.analysis.ordering import (
    cell_order,
    combination,
    combination_label,
    combinations,
    latest_by_cell,
    servers_of,
    strategies_of,
)
from forkwise.matrix.publish.document import Block, Heading, Para, Plot, new_figure, png, strategy_colors
from forkwise.matrix.records.types import CellRecord


def plot_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Plots")]
    for combo in combinations(records):
        chosen = [r for r in latest_by_cell(records).values() if combination(r) == combo]
        blocks.append(Heading(combination_label(combo), 3))
        for plot in (throughput_plot(chosen), memory_plot(chosen), cold_start_plot(chosen)):
            blocks.append(plot if plot is not None else Para("(no data for this plot)"))
    return blocks


def throughput_plot(records: Sequence[CellRecord]) -> Plot | None:
    with_load = [r for r in records if r.load]
    if not with_load:
        return None
    colors = strategy_colors(records)
    servers = servers_of(with_load)
    concurrencies = sorted({lv.concurrency for r in with_load for lv in r.load})
    fig = new_figure(4.2 * len(servers), 3.6)
    axes = fig.subplots(1, len(servers), sharey=True, squeeze=False)[0]
    for ax, server in zip(axes, servers, strict=True):
        on_server = [r for r in with_load if r.server == server]
        for record in sorted(on_server, key=lambda r: cell_order(r)[0]):
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
                "one panel per server; dotted: a cell whose verdict is not OK", png(fig))


def _grouped_bars(records: Sequence[CellRecord], value: Callable[[CellRecord], float | None],
                  ylabel: str) -> Plot | None:
    measured = [r for r in records if value(r) is not None]
    if not measured:
        return None
    strategies = strategies_of(measured)
    servers = servers_of(measured)
    fig = new_figure(max(5.0, 1.1 * len(strategies) + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        found = [_record_of(measured, strategy, server) for strategy in strategies]
        xs = [x + (i - (len(servers) - 1) / 2) * width for x in range(len(strategies))]
        heights = [math.nan if r is None else value(r) for r in found]
        bars = ax.bar(xs, heights, width, label=server, color=f"C{i % 10}")
        for bar, r in zip(bars, found, strict=True):
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
    return None if fig is None else Plot(caption, png(fig))


def cold_start_plot(records: Sequence[CellRecord]) -> Plot | None:
    fig = _grouped_bars(records, lambda r: r.cold_start_s, "cold start (s)")
    caption = "Cold start: launch to the first correct answer per strategy (hatched: verdict not OK)"
    return None if fig is None else Plot(caption, png(fig))
