"""Run a matrix profile: every cell in its own process, one record each, written at once.

Runs in the process of ``forkwise matrix``. Each cell is a ``forkwise cell`` child in
its own session, with a hard deadline (forkwise.matrix.run.cell_process). A failing, crashing or
hanging cell never stops the run and leaves nothing behind. Records are appended as each cell
ends, so ``--resume`` continues an interrupted run. On a host without a GPU, device=gpu cells
are skipped with the reason printed, and no record is written for them; so are the PostgreSQL
cells on a host without PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from forkwise import gpu, postgres
from forkwise.config import DEFAULT_DATABASE
from forkwise.errors import ConfigError
from forkwise.matrix.analysis.launches import combine_all, pass_order
from forkwise.matrix.records.axes import STEADY, Cell
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.hosts import WHOLE, Shard
from forkwise.matrix.records.jsonl import RECORDS_FILE, append_record, read_records
from forkwise.matrix.records.run_info import RUN_INFO_FILE, saved_run_info
from forkwise.matrix.records.types import SCHEMA_VERSION, CellRecord
from forkwise.matrix.run import finalists, goal_evidence, goal_rounds
from forkwise.matrix.run.cell_process import HostWatch, run_cell_process

# The profile's names, re-exported: what `forkwise matrix` runs is read here.
from forkwise.matrix.run.profile import Limits, LoadSettings, Profile, load_profile, parse_only, profile_names  # noqa: F401
from forkwise.matrix.run.shards import shard_cells
from forkwise.matrix.run.summary import summary_line
from forkwise.model.spec import ensure_spec

# --- progress ------------------------------------------------------------------------------


class Progress:
    """Launches done out of planned, the current cell and pass, elapsed time, each verdict as it lands."""

    def __init__(self, total: int, plain: bool, passes: int = 1):
        self.total, self.done, self.passes = total, 0, passes
        self.live = not plain and sys.stderr.isatty()
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 60:02d}:{s % 60:02d}"

    def _pass(self, number: int) -> str:
        return f" pass {number}/{self.passes}" if self.passes > 1 else ""

    def starting(self, cell: Cell, number: int = 1) -> None:
        text = f"[{self.done}/{self.total} {self._elapsed()}{self._pass(number)}] running {cell.id}"
        if self.live:
            sys.stderr.write("\r\033[2K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finished(self, record: CellRecord, skipped: bool = False, number: int = 1) -> None:
        self.done += 1
        prefix = "\r\033[2K" if self.live else ""
        note = " (kept from the earlier run)" if skipped else ""
        sys.stderr.write(f"{prefix}[{self.done}/{self.total} {self._elapsed()}{self._pass(number)}] "
                         f"{summary_line(record)}{note}\n")
        sys.stderr.flush()

    def dropped(self, count: int) -> None:
        """Launches planned but not run (a cell that failed is not launched again)."""
        self.total -= count


# --- the run -------------------------------------------------------------------------------


def add_goal_evidence(out: Path, home: Path) -> dict:
    """`forkwise evidence`: a run's goal evidence taken now, on this machine (run.goal_evidence),
    with the run's own profile; run.json says so. Returns the run's new run.json."""
    info = saved_run_info(out)
    if "profile" not in info:
        raise ConfigError(f"{out} has no run.json naming its profile: not a folder `forkwise matrix` wrote")
    records = combine_all(read_records(Path(out) / RECORDS_FILE))
    info["goal_evidence"] = goal_evidence.collect(Path(out), records, load_profile(info["profile"]), home)
    (Path(out) / RUN_INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def skip_gpu_cells(cells: list[Cell]) -> tuple[list[Cell], dict]:
    """On a host without a GPU, drop the device=gpu cells and say why (printed, and for run.json)."""
    wanted = [c for c in cells if c.device == "gpu"]
    if not wanted:
        return cells, {}
    info = gpu.probe()
    if info.available:
        return cells, {}
    reason = f"no GPU found ({info.reason})"
    print(f"forkwise: skipping {len(wanted)} gpu cells: {reason}", file=sys.stderr)
    return [c for c in cells if c.device != "gpu"], {"cells": [c.id for c in wanted], "reason": reason}


def skip_database_cells(cells: list[Cell]) -> tuple[list[Cell], dict]:
    """On a host without PostgreSQL, drop the cells that need it and say why (printed, and for run.json)."""
    wanted = [c for c in cells if c.database != DEFAULT_DATABASE]
    if not wanted:
        return cells, {}
    available, reason = postgres.available()
    if available:
        return cells, {}
    print(f"forkwise: skipping {len(wanted)} PostgreSQL cells: {reason}", file=sys.stderr)
    return [c for c in cells if c.database == DEFAULT_DATABASE], {"cells": [c.id for c in wanted], "reason": reason}


def wants_launch(cell: Cell, done: list[CellRecord], number: int) -> bool:
    """Whether launch `number` of a cell is worth running: only steady cells are repeated, and
    only while every earlier launch was OK (a failed cell has no throughput to repeat)."""
    if number == 1:
        return True
    return cell.scenario == STEADY and all(r.verdict.ok and r.load for r in done)


def _earlier_launches(records_path: Path, resume: bool) -> dict[str, list[CellRecord]]:
    """Cell id -> its launches so far, in order: those of the run resumed, or none (a fresh run:
    records of an earlier one are not mixed in)."""
    launches: dict[str, list[CellRecord]] = {}
    if resume and records_path.exists():
        for record in read_records(records_path):
            launches.setdefault(record.cell_id, []).append(record)
    elif records_path.exists():
        records_path.unlink()
    return launches


def _run_info(prof: Profile, cells: int, selection: dict[str, set[str]], shard: Shard, budgets: Budgets) -> dict:
    """What run.json says of the run before it starts."""
    return {
        "profile": prof.name, "description": prof.description,
        "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["forkwise", *sys.argv[1:]]) if "matrix" in sys.argv[1:] else "forkwise matrix",
        "cells": cells, "load": dataclasses.asdict(prof.load) | {"levels": list(prof.load.levels)},
        "limits": dataclasses.asdict(prof.limits), "gpu_policy": prof.gpu_policy,
        "recommend": budgets.to_dict(),
        # What `forkwise merge` checks: shards of one profile, one schema, every shard present.
        "shard": shard.to_dict(), "only": {axis: sorted(values) for axis, values in sorted(selection.items())},
        "schema_version": SCHEMA_VERSION,
    }


def run_passes(prof: Profile, cells: list[Cell], launches: dict[str, list[CellRecord]], records_path: Path,
               home: Path, host: HostWatch, progress: Progress) -> None:
    """Every launch of every cell, pass by pass, each record appended as it ends (`launches`: the
    records of earlier launches, from a resumed run; added to as cells end)."""
    top_level_only = dataclasses.replace(prof, load=dataclasses.replace(prof.load, levels=(max(prof.load.levels),)))
    for number in range(1, prof.load.repeats + prof.load.top_level_repeats + 1):
        plan = prof if number <= prof.load.repeats else top_level_only
        # Every pass in the same order: each cell's launches lie one pass apart. (Reversing
        # alternate passes puts the last cells' launches back to back, in the same slow
        # spell of the machine, where they agree by chance.) Each strategy's cells are spread
        # over the pass (launches.pass_order), so they do not share one slow spell.
        for cell in pass_order(cells, lambda c: c.strategy):
            done = launches.get(cell.id, [])
            if len(done) >= number:
                progress.finished(done[number - 1], skipped=True, number=number)
                continue
            if not wants_launch(cell, done, number):
                progress.dropped(1)
                continue
            progress.starting(cell, number)
            record = run_cell_process(cell, plan, home, host)
            host.after_cell(record)
            append_record(records_path, record)
            launches.setdefault(cell.id, []).append(record)
            progress.finished(record, number=number)


@dataclass(frozen=True)
class MatrixRun:
    """A finished ``forkwise matrix`` run: its folder, its run.json, how many cells and launches."""

    out: Path
    run_info: dict
    cells: int
    launches: int


def run_matrix(profile: str, only: list[str], out: Path | None, resume: bool, plain: bool, home: Path,
               p99_ms: float | None = None, memory_mb: float | None = None,
               shard: Shard = WHOLE) -> MatrixRun | None:
    """Run a profile's cells into `out` (records.jsonl and run.json); None when no cell is left to
    run here. Publishing the run is the caller's (``commands.run_matrix``)."""
    prof = load_profile(profile)
    selection = parse_only(only)
    cells = prof.select(selection)
    if not cells:
        raise ConfigError(f"--only {' '.join(only)} selects no cell of profile {prof.name!r}")
    if shard != WHOLE:  # split before skipping gpu cells: every host computes the same split
        selected = len(cells)
        cells = shard_cells(cells, prof, shard)
        print(f"forkwise: shard {shard} of profile {prof.name!r}: {len(cells)} of {selected} cells", file=sys.stderr)
    cells, skipped = skip_gpu_cells(cells)
    cells, skipped_database = skip_database_cells(cells)
    if not cells:
        print(f"forkwise: no cell of profile {prof.name!r} left to run; nothing written", file=sys.stderr)
        return None
    out = Path(out or Path("results") / prof.name)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / RECORDS_FILE
    launches = _earlier_launches(records_path, resume)
    for model, backend in sorted({(c.model, c.backend) for c in cells}):
        ensure_spec(home, model, backend=backend)  # build once, before any cell is timed
    started = time.monotonic()
    budgets = prof.recommend.overridden(p99_ms, memory_mb, "command line")
    run_info = _run_info(prof, len(cells), selection, shard, budgets)
    if skipped:
        run_info["skipped"] = skipped
    if skipped_database:
        run_info["skipped_database"] = skipped_database
    repeats = prof.load.repeats + prof.load.top_level_repeats
    host = HostWatch(prof.load.quiet_budget_s)
    progress = Progress(len(cells) * repeats, plain, repeats)
    run_passes(prof, cells, launches, records_path, home, host, progress)
    if prof.finalists.enabled and shard == WHOLE:  # a shard holds part of each question
        run_info["finalists"] = finalists.run_stage(out, list(read_records(records_path)), prof, budgets, home)
    if prof.goals.rounds and shard == WHOLE:  # a shard may hold one cell of a pair
        run_info["goal_rounds"] = goal_rounds.run_stage(out, list(read_records(records_path)), prof, home)
    if prof.goals.evidence and shard == WHOLE:  # a shard has part of the goals: the merged run has them
        measured = combine_all(read_records(records_path))
        run_info["goal_evidence"] = goal_evidence.collect(out, measured, prof, home)
    run_info["duration_s"] = round(time.monotonic() - started, 1)
    run_info.update(host.run_info(prof.load.quiet_budget_s))
    run_info["launches"] = progress.done
    (out / RUN_INFO_FILE).write_text(json.dumps(run_info, indent=2))
    return MatrixRun(out, run_info, len(cells), progress.done)
