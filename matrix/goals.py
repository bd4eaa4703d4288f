"""The performance goals, judged from one run's records (and the micro-benchmarks' JSON).

Each goal is computed here from numbers; none is written in ahead of the data. A goal
whose cells are missing from the run says so instead of passing or failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from forkwise.matrix.records import CellRecord, LoadLevel

CONTROL = "control"
BATCHED = "child-process-batched"
MODEL_SERVERS = ("child-process", "child-process-batched")
TOP_CONCURRENCY = 32


@dataclass(frozen=True)
class Goal:
    number: int
    goal: str
    measured: str
    ratio: float | None  # the measured ratio the goal is judged on (None: not measurable here)
    target: str
    met: bool | None  # None: the run has no data for it
    cells: tuple[str, ...] = ()  # profile labels of the cells it was judged on (see profile_label)


def profile_label(record: CellRecord, concurrency: int = TOP_CONCURRENCY) -> str:
    """The name `forkwise cell --profile-dir` gives that cell's profiles at that concurrency."""
    return f"{record.strategy}.{record.server}.w{record.workers}.{record.model}.c{concurrency}"


def _ok(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.verdict.ok]


def _level(record: CellRecord, concurrency: int) -> LoadLevel | None:
    return next((lv for lv in record.load if lv.concurrency == concurrency), None)


def _find(records, **where) -> CellRecord | None:
    found = [r for r in records if all(getattr(r, k) == v for k, v in where.items())]
    return found[-1] if found else None


def goal_ceiling(records: Sequence[CellRecord]) -> Goal:
    """1. The best OK strategy (default model) reaches >= 80% of its server's control at c32."""
    best: tuple[float, CellRecord, CellRecord] | None = None
    for r in _ok(records):
        if r.strategy == CONTROL or r.model != "default":
            continue
        control = _find(_ok(records), strategy=CONTROL, server=r.server, workers=r.workers, model=r.model, device=r.device)
        mine, theirs = _level(r, TOP_CONCURRENCY), control and _level(control, TOP_CONCURRENCY)
        if mine and theirs and theirs.rps > 0:
            ratio = mine.rps / theirs.rps
            if best is None or ratio > best[0]:
                best = (ratio, r, control)
    text = "best OK strategy / its server's control, requests/s at concurrency 32, default model"
    if best is None:
        return Goal(1, text, "no OK model cell and control pair with load at concurrency 32", None, ">= 0.80", None)
    ratio, r, control = best
    measured = (f"{r.strategy} under {r.server} (w{r.workers}): {_level(r, 32).rps:.0f} req/s; "
                f"control {_level(control, 32).rps:.0f} req/s")
    return Goal(1, text, measured, round(ratio, 2), ">= 0.80", ratio >= 0.8,
                (profile_label(r), profile_label(control)))


def goal_batching(records: Sequence[CellRecord]) -> Goal:
    """2. With the large model, the batched model server reaches >= 2x lazy at c32, same server."""
    text = "child-process-batched / lazy, requests/s at concurrency 32, large model, same server and workers"
    pairs = []
    for b in _ok(records):
        if b.strategy != BATCHED or b.model != "large":
            continue
        lazy = _find(records, strategy="lazy", server=b.server, workers=b.workers, model="large", device=b.device)
        lb = _level(b, TOP_CONCURRENCY)
        ll = lazy and lazy.verdict.ok and _level(lazy, TOP_CONCURRENCY)
        if lb and ll and ll.rps > 0:
            pairs.append((lb.rps / ll.rps, b, lb.rps, ll.rps))
    if not pairs:
        return Goal(2, text, "no OK batched and lazy pair on the large model with load at concurrency 32", None, ">= 2.0", None)
    ratio, b, rb, rl = max(pairs, key=lambda p: p[0])
    lazy = _find(records, strategy="lazy", server=b.server, workers=b.workers, model="large", device=b.device)
    return Goal(2, text, f"{b.server} (w{b.workers}): batched {rb:.0f} req/s, lazy {rl:.0f} req/s",
                round(ratio, 2), ">= 2.0", ratio >= 2.0, (profile_label(b), profile_label(lazy)))


def goal_memory(records: Sequence[CellRecord]) -> Goal:
    """3. The model server's total PSS is below lazy's at 2 workers, and the gap grows at 4."""
    text = "total PSS, lazy minus model server (child-process or batched), same server, 2 and 4 workers"
    rows = []
    for server in sorted({r.server for r in records}):
        for strategy in MODEL_SERVERS:
            gaps = {}
            for workers in (2, 4):
                ms = _find(_ok(records), strategy=strategy, server=server, workers=workers, model="default")
                lazy = _find(_ok(records), strategy="lazy", server=server, workers=workers, model="default")
                if ms and lazy and ms.memory and lazy.memory:
                    gaps[workers] = (lazy.memory.total_pss_mb, ms.memory.total_pss_mb)
            if len(gaps) == 2:
                rows.append((server, strategy, gaps))
    if not rows:
        return Goal(3, text, "no model-server and lazy pair measured at both 2 and 4 workers", None, "gap > 0 and growing", None)
    server, strategy, gaps = rows[0]
    (l2, m2), (l4, m4) = gaps[2], gaps[4]
    met = m2 < l2 and (l4 - m4) > (l2 - m2)
    measured = (f"{strategy} under {server}: w2 {m2:.0f} MB vs lazy {l2:.0f} MB (gap {l2 - m2:.0f}); "
                f"w4 {m4:.0f} MB vs lazy {l4:.0f} MB (gap {l4 - m4:.0f})")
    return Goal(3, text, measured, round(m2 / l2, 2) if l2 else None, "gap > 0 and growing", met)


def load_bench(path: Path) -> dict[str, dict]:
    """pytest-benchmark JSON -> {test name: extra_info | stats}; empty when absent."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {b["name"]: {**b.get("stats", {}), **b.get("extra_info", {})} for b in doc.get("benchmarks", [])}


def goal_fast_paths(bench: dict[str, dict]) -> Goal:
    """4. locked-singleton fast path <= 1 us over a plain global; model-server round trip <= 150 us."""
    text = "locked-singleton fast path over a plain global (<= 1 us); model-server round trip, 1x256 float32 (<= 150 us)"
    overhead = bench.get("test_locked_singleton_overhead_vs_global", {}).get("overhead_ns")
    full = bench.get("test_model_server_round_trip_1x256", {})
    echo = bench.get("test_protocol_round_trip_1x256_echo", {}).get("round_trip_us")
    if overhead is None or not full:
        return Goal(4, text, "no micro-benchmark results (run `tox -e bench`)", None, "<= 1 us; <= 150 us", None)
    rt, model = full.get("round_trip_us"), full.get("model_call_us")
    measured = f"fast path +{overhead:.0f} ns; round trip {rt:.0f} us"
    if model is not None:
        measured += f" of which the model call {model:.0f} us (IPC and framing {rt - model:.0f} us"
        measured += f"; echo without a model {echo:.0f} us)" if echo is not None else ")"
    return Goal(4, text, measured, round(rt / 150, 2) if rt else None, "<= 1 us; <= 150 us",
                overhead <= 1000 and rt is not None and rt <= 150)


def evaluate(records: Sequence[CellRecord], bench: dict[str, dict]) -> list[Goal]:
    return [goal_ceiling(records), goal_batching(records), goal_memory(records), goal_fast_paths(bench)]


def load_profiles(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """py-spy summaries under results/profiles: {cell label: [(process, summary text)]}."""
    found: dict[str, list[tuple[str, str]]] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.txt")):
            label, _, process = path.stem.rpartition(".")
            found.setdefault(label, []).append((process, path.read_text()))
    return found
