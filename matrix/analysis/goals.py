"""The performance goals, judged from one run's records (and the micro-benchmarks' JSON): the
analysis; ``goals_report`` publishes them, with where the time goes for a missed one (py-spy profiles).

Each goal is computed here from numbers; none is written in ahead of the data. A goal whose
cells are missing from the run says so instead of passing or failing.

A report speaks for the machine its run measured: the micro-benchmarks and profiles count only
when made on the run's host (``goal_provenance``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from forkwise import strategies
from forkwise.matrix.analysis.controls import Controls, peer
from forkwise.matrix.analysis.goal_pairs import (
    BATCHED,
    BATCHING_MODELS,
    CHILD_PROCESS,
    LAZY,
    TOP_CONCURRENCY,
    batching_candidates,
    ceiling_candidates,
    level_of,
    window_tax_pairs,
)
from forkwise.matrix.analysis.goal_pairs import ok_cells as _ok
from forkwise.matrix.analysis.launches import launch_noise
from forkwise.matrix.analysis.ordering import strategy_order
from forkwise.matrix.analysis.paired import PairRatio, judged_on_rounds, rounds_text
from forkwise.matrix.analysis.recommend import stderr_of
from forkwise.matrix.analysis.significance import FAMILY_ALPHA, critical_z
from forkwise.matrix.records.types import CellRecord, LoadLevel, Verdict

# The targets (issue 21, "batching that pays"; before it 0.80, 2.0 and 1.2).
CEILING = 0.85  # goal 1: the best OK cell / its control at c32, default model
BATCHING = 3.0  # goal 2: batched / lazy at c32, large model, same request path
WINDOW_TAX = 1.1  # goal 3: batched p50 / child-process p50 at c1
GOAL_TARGETS = {1: CEILING, 2: BATCHING, 3: WINDOW_TAX}  # the ratio goals measured on interleaved rounds


def model_server_strategies() -> tuple[str, ...]:
    """The registered strategies that run a model-server process (``Strategy.has_model_server``)."""
    return tuple(name for name in strategy_order() if strategies.get(name).has_model_server)


@dataclass(frozen=True)
class Goal:
    number: int
    goal: str
    measured: str
    ratio: float | None  # the measured ratio the goal is judged on (None: not measurable here)
    target: str
    met: bool | None  # None: the run has no data for it, or (undecided) its interval straddles the target
    cells: tuple[str, ...] = ()  # profile labels of the cells it was judged on (see record_profile_label)
    interval: tuple[float, float] | None = None  # the ratio's confidence interval, where the noise gives one
    undecided: bool = False  # measured, but the interval holds the target: neither met nor missed

    @property
    def result(self) -> str:
        if self.undecided:
            return "undecided"
        return {True: "met", False: "missed", None: "not measured in this run"}[self.met]


@dataclass(frozen=True)
class RatioPair:
    """A ratio goal's pair of cells at one concurrency, with the interval of their throughput ratio."""

    ratio: float
    low: float
    high: float
    mine: CellRecord
    theirs: CellRecord
    mine_rps: float
    theirs_rps: float


def ratio_pair(mine: CellRecord, theirs: CellRecord, concurrency: int, noise: dict[int, float],
               z: float) -> RatioPair | None:
    """mine / theirs at `concurrency`, with its interval: each level's standard error from its
    launches and the run's launch noise (the recommendation's), on a log scale."""
    a, b = level_of(mine, concurrency), level_of(theirs, concurrency)
    if a is None or b is None or a.rps <= 0 or b.rps <= 0:
        return None
    se = math.hypot(stderr_of(a, noise) / a.rps, stderr_of(b, noise) / b.rps)
    ratio = a.rps / b.rps
    return RatioPair(ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se), mine, theirs, a.rps, b.rps)


def judged_pairs(pairs: Sequence[RatioPair], target: float) -> tuple[RatioPair, bool | None, bool]:
    """Judge "at least one pair reaches `target`" on intervals, never on the largest of noisy ratios:
    met when some pair's interval lies above it, missed when every pair's lies below, else undecided.
    Returns the pair to show (the one that decides it, or the most promising) with (met, undecided)."""
    above = [p for p in pairs if p.low >= target]
    if above:
        return max(above, key=lambda p: p.low), True, False
    best = max(pairs, key=lambda p: p.high)
    if best.high < target:
        return best, False, False
    return best, None, True


def profile_label(strategy: str, server: str, workers: int, model: str, concurrency: int) -> str:
    """The name `forkwise cell --profile-dir` gives a cell's profiles at a concurrency."""
    return f"{strategy}.{server}.w{workers}.{model}.c{concurrency}"


def record_profile_label(record: CellRecord, concurrency: int = TOP_CONCURRENCY) -> str:
    """profile_label of a recorded cell."""
    return profile_label(record.strategy, record.server, record.workers, record.model, concurrency)


def _find(records: Sequence[CellRecord], **where: object) -> CellRecord | None:
    found = [r for r in records if all(getattr(r, k) == v for k, v in where.items())]
    return found[-1] if found else None


def _on_rounds(pairs: Sequence[PairRatio], goal: int) -> list[PairRatio]:
    return [p for p in pairs if p.plan.goal == goal]


def _labels(records: Sequence[CellRecord], pairs: Sequence[PairRatio]) -> tuple[str, ...]:
    by_id = {r.cell_id: r for r in records}
    return tuple(record_profile_label(by_id[c], p.plan.concurrency) for p in pairs
                 for c in (p.plan.mine, p.plan.theirs) if c in by_id)


def cpu_ms_a_request(level: LoadLevel) -> float:
    """Milliseconds of CPU the deployment's server processes spent a request answered at a level."""
    return 1000 * level.server_cpu_s / level.requests if level.requests else 0.0


def goal_ceiling(records: Sequence[CellRecord], paired: Sequence[PairRatio] = (),
                 bench: dict[str, dict] | None = None) -> Goal:
    """1. An OK strategy (default model) reaches CEILING of its server's control at c32: judged on the
    interleaved rounds of the best cell and its control where the run measured them, else on the
    interval of each cell's ratio from the passes (family-wise over the cells)."""
    text = "best OK strategy / its server's control, requests/s at concurrency 32, default model"
    rounds = _on_rounds(paired, 1)
    if rounds:
        met, undecided = judged_on_rounds(rounds, CEILING)
        p = rounds[0]
        return Goal(1, text, rounds_text(p, "req/s") + _cpu_ceiling(records, p, bench or {}), round(p.ratio, 2),
                    f">= {CEILING:.2f}", met, _labels(records, rounds), (round(p.low, 2), round(p.high, 2)), undecided)
    pairs = _ratio_pairs(records, ceiling_candidates(records))
    if not pairs:
        return Goal(1, text, "no OK model cell and control pair with load at concurrency 32", None,
                    f">= {CEILING:.2f}", None)
    shown, met, undecided = judged_pairs(pairs, CEILING)
    measured = (f"{shown.mine.strategy} under {shown.mine.server} (w{shown.mine.workers}): {shown.mine_rps:.0f} "
                f"req/s; control {shown.theirs_rps:.0f} req/s; {len(pairs)} cells judged (passes only)")
    return Goal(1, text, measured, round(shown.ratio, 2), f">= {CEILING:.2f}", met,
                (record_profile_label(shown.mine), record_profile_label(shown.theirs)),
                (round(shown.low, 2), round(shown.high, 2)), undecided)


def _cpu_ceiling(records: Sequence[CellRecord], pair: PairRatio, bench: dict[str, dict]) -> str:
    """What CPU allows on a CPU-bound host: the control's CPU per request at c32 (its server processes'
    CPU over its requests) against the model's call in process (the micro-benchmark): any strategy
    that calls the model once a request serves at most control / (control + call) of the control."""
    control = next((r for r in records if r.cell_id == pair.plan.theirs), None)
    level = level_of(control, TOP_CONCURRENCY) if control else None
    call_us = bench.get(OVERHEAD_BENCH, {}).get("in_process_us")
    if level is None or not level.requests or call_us is None:
        return ""
    path_ms, call_ms = cpu_ms_a_request(level), call_us / 1000
    bound = path_ms / (path_ms + call_ms)
    return (f" (CPU's ceiling: the path costs {path_ms:.2f} ms of CPU a request, the model's call {call_ms:.2f} ms "
            f"in process: at most {bound:.2f}x, {'below' if bound < CEILING else 'above'} the target)")


def _ratio_pairs(records: Sequence[CellRecord], pairs: Sequence[tuple[CellRecord, CellRecord]]) -> list[RatioPair]:
    """Each (mine, theirs) pair's ratio at concurrency 32, its interval family-wise over the pairs."""
    noise = launch_noise(records)
    z = critical_z(FAMILY_ALPHA, len(pairs))
    found = [ratio_pair(mine, theirs, TOP_CONCURRENCY, noise, z) for mine, theirs in pairs]
    return [p for p in found if p is not None]


def goal_batching(records: Sequence[CellRecord], paired: Sequence[PairRatio] = ()) -> Goal:
    """2. For each of BATCHING_MODELS the batched model server reaches BATCHING x lazy at c32, same request
    path and workers: judged on the interleaved rounds of each model's pair where the run measured them
    (every model must), else on the passes (some pair's interval above BATCHING: judged_pairs)."""
    text = (f"{BATCHED} / {LAZY}, requests/s at concurrency 32, {' and '.join(BATCHING_MODELS)} models, same "
            "request path (server, requests in flight, workers)")
    rounds = _on_rounds(paired, 2)
    if rounds:
        met, undecided = judged_on_rounds(rounds, BATCHING)
        worst = min(rounds, key=lambda p: p.ratio)
        measured = "; ".join(rounds_text(p, "req/s") + _path_ceiling(records, p) for p in rounds)
        return Goal(2, text, measured, round(worst.ratio, 2), f">= {BATCHING:.1f}", met, _labels(records, rounds),
                    (round(worst.low, 2), round(worst.high, 2)), undecided)
    pairs = _ratio_pairs(records, batching_candidates(records))
    if not pairs:
        return Goal(2, text, "no OK batched and lazy pair of a batching model with load at concurrency 32", None,
                    f">= {BATCHING:.1f}", None)
    shown, met, undecided = judged_pairs(pairs, BATCHING)
    return Goal(2, text, f"{shown.mine.model} model, {shown.mine.server} (w{shown.mine.workers}): batched "
                f"{shown.mine_rps:.0f} req/s, lazy {shown.theirs_rps:.0f} req/s (passes only)", round(shown.ratio, 2),
                f">= {BATCHING:.1f}", met, (record_profile_label(shown.mine), record_profile_label(shown.theirs)),
                (round(shown.low, 2), round(shown.high, 2)), undecided)


def _path_ceiling(records: Sequence[CellRecord], pair: PairRatio) -> str:
    """The path's control over lazy in the passes (below BATCHING no model server on it can reach the goal),
    and each one's CPU a request at c32: BATCHING x lazy on a CPU-bound host needs lazy's / BATCHING."""
    by_id = {r.cell_id: r for r in records}
    mine, theirs = by_id.get(pair.plan.mine), by_id.get(pair.plan.theirs)
    control = Controls.of_run(records).control_level(mine, TOP_CONCURRENCY) if mine else None
    lazy, batched = (level_of(r, TOP_CONCURRENCY) if r else None for r in (theirs, mine))
    if control is None or lazy is None or batched is None or lazy.rps <= 0 or not lazy.requests:
        return ""
    ceiling = control.rps / lazy.rps
    bound = "below the target: the path caps it" if ceiling < BATCHING else "room for the target"
    cpu = [cpu_ms_a_request(lv) for lv in (control, batched, lazy)]
    return (f" (the path's ceiling: its control {control.rps:.0f} req/s = {ceiling:.2f}x lazy in the passes, {bound}; "
            f"CPU a request at c32: path {cpu[0]:.2f} ms, batched {cpu[1]:.2f}, lazy {cpu[2]:.2f}: {BATCHING:g}x lazy "
            f"needs at most {cpu[2] / BATCHING:.2f})")


def goal_memory(records: Sequence[CellRecord]) -> Goal:
    """6. The model server's total PSS is below lazy's at 2 workers, and the gap grows at 4."""
    text = f"total PSS, {LAZY} minus model server ({CHILD_PROCESS} or batched), same server, 2 and 4 workers"
    rows = []
    for server in sorted({r.server for r in records}):
        for strategy in model_server_strategies():
            gaps = {}
            for workers in (2, 4):
                ms = _find(_ok(records), strategy=strategy, server=server, workers=workers, model="default")
                lazy = peer(ms, LAZY, _ok(records)) if ms else None
                if ms and lazy and ms.memory and lazy.memory:
                    gaps[workers] = (lazy.memory.total_pss_mb, ms.memory.total_pss_mb)
            if len(gaps) == 2:
                rows.append((server, strategy, gaps))
    if not rows:
        return Goal(6, text, "no model-server and lazy pair measured at both 2 and 4 workers", None,
                    "gap > 0 and growing", None)
    server, strategy, gaps = rows[0]
    (l2, m2), (l4, m4) = gaps[2], gaps[4]
    met = m2 < l2 and (l4 - m4) > (l2 - m2)
    measured = (f"{strategy} under {server}: w2 {m2:.0f} MB vs lazy {l2:.0f} MB (gap {l2 - m2:.0f}); "
                f"w4 {m4:.0f} MB vs lazy {l4:.0f} MB (gap {l4 - m4:.0f})")
    return Goal(6, text, measured, round(m2 / l2, 2) if l2 else None, "gap > 0 and growing", met)


def goal_fast_paths(bench: dict[str, dict]) -> Goal:
    """7. locked-singleton fast path <= 1 us over a plain global; model-server round trip <= 150 us."""
    text = ("locked-singleton fast path over a plain global (<= 1 us); "
            "model-server round trip, 1x256 float32 (<= 150 us)")
    overhead = bench.get("test_locked_singleton_overhead_vs_global", {}).get("overhead_ns")
    full = bench.get("test_model_server_round_trip_1x256", {})
    echo = bench.get("test_protocol_round_trip_1x256_echo", {}).get("round_trip_us")
    if overhead is None or not full:
        return Goal(7, text, "no micro-benchmark results from this machine in the run (`forkwise evidence DIR` "
                             "takes them)", None, "<= 1 us; <= 150 us", None)
    rt, model = full.get("round_trip_us"), full.get("model_call_us")
    measured = f"fast path +{overhead:.0f} ns; round trip {rt:.0f} us"
    if model is not None:
        measured += f" of which the model call {model:.0f} us (IPC and framing {rt - model:.0f} us"
        measured += f"; echo without a model {echo:.0f} us)" if echo is not None else ")"
    return Goal(7, text, measured, round(rt / 150, 2) if rt else None, "<= 1 us; <= 150 us",
                overhead <= 1000 and rt is not None and rt <= 150)


def goal_no_window_tax(records: Sequence[CellRecord], paired: Sequence[PairRatio] = ()) -> Goal:
    """3. At concurrency 1 a lone request is not held for a batch: the batched model server's p50 within
    WINDOW_TAX x the unbatched one's, same request path, default model on the CPU: judged on the interleaved
    rounds of the pair slowest in the passes where the run measured them, else on the passes' worst pair."""
    text = f"{BATCHED} / {CHILD_PROCESS}, p50 latency at concurrency 1, default model, same request path"
    rounds = _on_rounds(paired, 3)
    if rounds:
        met, undecided = judged_on_rounds(rounds, WINDOW_TAX, at_least=False)
        p = rounds[0]
        return Goal(3, text, rounds_text(p, "ms", "{:.2f}") + " (the pair slowest in the passes)",
                    round(p.ratio, 2), f"<= {WINDOW_TAX:.1f}", met, _labels(records, rounds),
                    (round(p.low, 2), round(p.high, 2)), undecided)
    pairs = window_tax_pairs(records)
    if not pairs:
        return Goal(3, text, "no OK batched and child-process pair with load at concurrency 1", None,
                    f"<= {WINDOW_TAX:.1f}", None)
    ratio, b, plain, pb, pp = max(pairs, key=lambda p: p[0])
    return Goal(3, text, f"worst of {len(pairs)} servers: {b.server} (w{b.workers}): batched p50 {pb:.2f} ms, "
                f"{CHILD_PROCESS} {pp:.2f} ms (passes only)", round(ratio, 2), f"<= {WINDOW_TAX:.1f}",
                ratio <= WINDOW_TAX, (record_profile_label(b, 1), record_profile_label(plain, 1)))


OVERHEAD_BENCH = "test_model_server_overhead_1x256"


def goal_model_server_overhead(bench: dict[str, dict]) -> Goal:
    """4. The batched model server's round trip at batch 1, over the same compiled call in process, <= 100 us
    (benchmarks/test_model_server_overhead.py, which also says where the overhead goes)."""
    text = "model-server round trip over the same call in process, batch 1, default model (micro-benchmark)"
    found = bench.get(OVERHEAD_BENCH, {})
    if "overhead_us" not in found:
        return Goal(4, text, "no micro-benchmark result from this machine in the run (`forkwise evidence DIR` "
                             "takes it)", None, "<= 100 us", None)
    over, goal = found["overhead_us"], found.get("goal_us", 100)
    measured = (f"round trip {found['round_trip_us']:.0f} us against {found['in_process_us']:.0f} us in process: "
                f"+{over:.0f} us (the round trip itself {found['ipc_us']:.0f} us, waiting for the answer "
                f"{found['waiting_us']:.0f} us, the call slower in the server {found['call_in_server_us']:.0f} us)")
    return Goal(4, text, measured, round(over / goal, 2), f"<= {goal} us", over <= goal)


GPU_WORKERS, GPU_CONCURRENCY = 8, 64


def goal_gpu(records: Sequence[CellRecord]) -> Goal:
    """5. On a GPU at 8 workers, for every backend: batched >= 0.85x its control and never below lazy at
    c64, with at most 1/4 of lazy's GPU memory; no batched GPU cell hangs."""
    text = (f"GPU, {GPU_WORKERS} workers, default model, every backend: batched / its control at c{GPU_CONCURRENCY} "
            f"(>= 0.85, and >= lazy), batched GPU memory / lazy's (<= 0.25), no HANG of a batched cell")
    gpu = [r for r in records if r.device == "gpu"]
    hung = [r.cell_id for r in gpu if r.strategy == BATCHED and r.verdict is Verdict.HANG]
    controls, parts, cells, met = Controls.of_run(gpu), [], [], not hung
    ratios = []
    for b in _ok(gpu):
        if b.strategy != BATCHED or b.workers != GPU_WORKERS or b.model != "default":
            continue
        lazy = peer(b, LAZY, _ok(gpu))
        mine, control = level_of(b, GPU_CONCURRENCY), controls.control_level(b, GPU_CONCURRENCY)
        theirs = lazy and level_of(lazy, GPU_CONCURRENCY)
        if not (lazy and mine and control and control.rps > 0 and theirs):
            continue
        memory = (b.memory.total_gpu_mb / lazy.memory.total_gpu_mb
                  if b.memory and lazy.memory and b.memory.total_gpu_mb and lazy.memory.total_gpu_mb else None)
        ratio = mine.rps / control.rps
        ratios.append(ratio)
        met = met and ratio >= 0.85 and mine.rps >= theirs.rps and memory is not None and memory <= 0.25
        parts.append(f"{b.backend} {b.server}: {ratio:.2f}x control, {mine.rps / theirs.rps:.2f}x lazy, "
                     f"memory {'?' if memory is None else f'{memory:.2f}'}x lazy")
        cells += [record_profile_label(b, GPU_CONCURRENCY), record_profile_label(lazy, GPU_CONCURRENCY)]
    if hung:
        parts.append(f"HANG: {', '.join(hung)}")
    elif not ratios:
        return Goal(5, text, "no GPU cells at 8 workers with batched, lazy and control measured at c64 "
                    "(a GPU host runs the gpu profile)", None, ">= 0.85; <= 0.25", None)
    return Goal(5, text, "; ".join(parts), round(min(ratios), 2) if ratios else None, ">= 0.85; <= 0.25", met,
                tuple(cells))


BATCH_CAP = 8  # rows: what 2 workers of 4 threads could ever hand the model server at once


def goal_batches(records: Sequence[CellRecord]) -> Goal:
    """8. Where the deployment holds more than BATCH_CAP requests at once (workers x requests in flight
    per worker), the batched model server's records show calls above BATCH_CAP rows."""
    text = (f"{BATCHED}: its model server's largest call, where workers x requests in flight per worker "
            f"> {BATCH_CAP} and the load reaches concurrency {TOP_CONCURRENCY}")
    cells = [r for r in _ok(records) if r.strategy == BATCHED and r.model_server is not None
             and r.workers * r.threads > BATCH_CAP and level_of(r, TOP_CONCURRENCY) is not None]
    target = f"> 1 (above {BATCH_CAP} rows)"
    if not cells:
        return Goal(8, text, "no OK batched cell that holds more than 8 requests at once, with its model server's "
                    "statistics", None, target, None)
    best = max(cells, key=lambda r: (r.model_server.largest_call if r.model_server else 0, r.cell_id))
    stats = best.model_server
    assert stats is not None  # chosen among cells that have them
    measured = (f"{best.cell_id}: largest call {stats.largest_call} rows; {stats.rows_per_call or 0:.1f} rows a call "
                f"over {stats.calls} calls; {len(cells)} cells")
    return Goal(8, text, measured, round(stats.largest_call / BATCH_CAP, 2), target, stats.largest_call > BATCH_CAP,
                (record_profile_label(best),))


def evaluate(records: Sequence[CellRecord], bench: dict[str, dict], paired: Sequence[PairRatio] = ()) -> list[Goal]:
    """Issue 13's goals (1-5: the model server that scales, at issue 21's targets), the earlier ones
    (6, 7), then issue 21's batches (8). `paired`: the run's goal pairs measured interleaved
    (goal_rounds.json, ``paired.measured_pairs``); goals 1-3 are judged on them where present."""
    return [goal_ceiling(records, paired, bench), goal_batching(records, paired), goal_no_window_tax(records, paired),
            goal_model_server_overhead(bench), goal_gpu(records), goal_memory(records), goal_fast_paths(bench),
            goal_batches(records)]
