"""The performance goals as the report publishes them (``goals`` judges them), with where the time
goes for a missed one (py-spy profiles), from micro-benchmarks and profiles made on the run's host only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from forkwise.matrix.analysis.goal_provenance import Bench, Host, Profiles, run_host
from forkwise.matrix.analysis.goals import Goal, evaluate
from forkwise.matrix.analysis.paired import measured_pairs, plans_of
from forkwise.matrix.publish.document import MISSING, Block, Code, Heading, Para, Table, fmt_ratio
from forkwise.matrix.records.types import CellRecord

# --- the section -------------------------------------------------------------------------------


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


def bench_blocks(bench: Bench | None, host: Host | None) -> tuple[dict[str, dict], list[Block]]:
    """The benchmark results this run's report may use (only those from the run's host), and
    what it says about them."""
    if bench is None:
        return {}, [Para("No micro-benchmark results in this run's folder (bench/benchmarks.json: a profile with "
                         "[goals] evidence = true or `forkwise evidence DIR` takes them).",
                         "Micro-benchmarks:")]
    if bench.provenance.host != host:
        return {}, [Para(f"bench/benchmarks.json was measured on another machine "
                         f"({bench.provenance.describe()}), not used: this report speaks for "
                         f"{host.describe() if host else 'its own machine'} only. Run `forkwise evidence DIR` here.",
                         "Micro-benchmarks:")]
    return bench.results, [Para(f"bench/benchmarks.json, {bench.provenance.describe()}.",
                                "Micro-benchmarks:")]


def profile_blocks(goal: Goal, profiles: dict[str, Profiles], host: Host | None) -> list[Block]:
    if not goal.cells:  # a micro-benchmark's goal: no cell to profile
        return [Para("A micro-benchmark's goal: the measured column says where the time goes, part by part, "
                     "as the benchmark measured it (bench/benchmarks.json).")]
    blocks: list[Block] = []
    for label in goal.cells:
        found = profiles.get(label)
        if found is None:
            continue
        if found.provenance is None or found.provenance.host != host:
            where = ("it says nothing of where it was taken" if found.provenance is None
                     else f"it was taken on another machine ({found.provenance.describe()})")
            blocks.append(Para(f"the profile of {label} is not shown: {where}.", "Left out:"))
            continue
        blocks.append(Para(f"{label}, {found.provenance.describe()}.", "Profiled:"))
        for process, text in found.summaries:
            own = text.split("self       function", 1)[-1].strip("\n").splitlines()[:PROFILE_LINES]
            blocks.append(Para(f"{label}, {process}: {text.splitlines()[0]}; {request_path_shares(text)}."))
            blocks.append(Code("\n".join(own)))
    if not any(isinstance(b, Code) for b in blocks):
        blocks.append(Para("No profile of its cells from this machine in this run's folder (profiles/: a profile "
                           "with [goals] evidence = true or `forkwise evidence DIR` takes them); the measured "
                           "column holds the breakdown."))
    return blocks


def run_goals(records: Sequence[CellRecord], bench: Bench | None,
              goal_rounds: Mapping[str, Any] | None = None) -> list[Goal]:
    """The goals judged from the run's records, its goal pairs' rounds and its micro-benchmarks (only
    those from its host)."""
    results, _ = bench_blocks(bench, run_host(records))
    return evaluate(records, results, measured_pairs(goal_rounds))


def pairs_blocks(goal_rounds: Mapping[str, Any] | None) -> list[Block]:
    """Each goal pair's interleaved rounds: what was measured, the ratio and why the rounds stopped."""
    if not goal_rounds:
        return [Para("This run measured no goal pair interleaved: goals 1-3 are judged on the passes alone, "
                     "launches minutes apart (a profile's [goals] rounds measures them).", "Goal pairs:")]
    rows = []
    measured = {(m.plan.goal, m.plan.mine, m.plan.theirs): m for m in measured_pairs(goal_rounds)}
    for (plan, rounds), data in zip(plans_of(goal_rounds), goal_rounds["pairs"], strict=True):
        p = measured.get((plan.goal, plan.mine, plan.theirs))
        rows.append((str(plan.goal), plan.about, plan.mine, plan.theirs, f"c{plan.concurrency}", plan.metric,
                     str(len(rounds)), fmt_ratio(p.ratio) if p else MISSING,
                     f"{p.low:.2f}-{p.high:.2f}" if p else MISSING,
                     f"{p.mde_pct:.1f}%" if p and p.mde_pct is not None else MISSING, data.get("stopped", "")))
    return [Para("The cells each ratio goal turns on (chosen from the passes), booted side by side and loaded in "
                 "randomized interleaved rounds at the goal's concurrency until the ratio's interval lay on one "
                 "side of the target: the host's drift falls on both alike. Interval: Student's t, 95% "
                 "(family-wise over a goal's pairs); MDE: the smallest change the rounds find with 80% power.",
                 "Goal pairs:"),
            Table(("goal", "pair", "mine", "theirs", "load", "metric", "rounds", "ratio", "interval", "MDE",
                   "stopped"), tuple(rows))]


def goals_section(records: Sequence[CellRecord], bench: Bench | None, profiles: dict[str, Profiles],
                  goal_rounds: Mapping[str, Any] | None = None) -> list[Block]:
    host = run_host(records)
    results, about_bench = bench_blocks(bench, host)
    goals = evaluate(records, results, measured_pairs(goal_rounds))
    rows = tuple(
        (str(g.number), g.goal, g.measured, fmt_ratio(g.ratio) if g.ratio is not None else MISSING,
         f"{g.interval[0]:.2f}-{g.interval[1]:.2f}" if g.interval else MISSING, g.target, g.result)
        for g in goals
    )
    blocks: list[Block] = [
        Heading("Performance goals"),
        Para("Judged by code from this run's records and its micro-benchmarks (bench/), each only from this "
             "run's machine. For a missed goal, where the time goes: py-spy profiles of the cells it was judged "
             "on, each launched once more at the goal's concurrency after the run's cells (profiles/; self time "
             "of the busiest functions, per process)."),
        *about_bench,
        Para("A ratio goal judged over several cells is met when one cell's interval (family-wise 5% over the "
             "cells) lies above its target, missed when every cell's lies below, undecided otherwise: never "
             "the largest of many noisy ratios."),
        Table(("#", "goal", "measured", "ratio", "interval", "target", "result"), rows),
        *pairs_blocks(goal_rounds),
    ]
    for goal in goals:
        if goal.met is False:
            blocks.append(Heading(f"Goal {goal.number} missed: where the time goes", 3))
            blocks += profile_blocks(goal, profiles, host)
    return blocks
