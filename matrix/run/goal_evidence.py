"""A run's own evidence for its performance goals, taken on the run's machine right after its cells.

The goals table (forkwise.matrix.analysis.goals) judges some goals from micro-benchmarks and explains each
missed goal with py-spy profiles of the cells it was judged on. A report speaks for the machine its
run measured, so both are made by the run itself, into its folder:

- ``bench/benchmarks.json``: the micro-benchmarks (benchmarks/, pytest-benchmark), when the
  checkout has them and pytest-benchmark is installed (``forkwise[bench]``);
- ``profiles/``: for every missed goal, each of its cells launched once more at the goal's
  concurrency with ``py-spy record`` on its workers and model server (``forkwise[profile]``).

Runs in the matrix process (``forkwise matrix``, or ``forkwise evidence RUN_DIR`` for a run made
without it); each cell runs in its own ``forkwise cell`` process, as in the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import forkwise
from forkwise.errors import ConfigError
from forkwise.matrix.analysis.goals import evaluate, record_profile_label
from forkwise.matrix.analysis.paired import PairRatio, load_goal_rounds, measured_pairs
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.run_info import GOAL_ROUNDS_FILE, bench_path, profiles_dir
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run.profile import Profile
from forkwise.matrix.run.profiling import find_py_spy
from forkwise.procs import ProcessGroup

# The package is the checkout (pyproject's package-dir): the micro-benchmarks are there, in a source checkout only.
BENCHMARKS = Path(forkwise.__file__).resolve().parent / "benchmarks"


@dataclass(frozen=True)
class Target:
    """One cell of a missed goal, at the concurrency the goal judged it."""

    record: CellRecord
    concurrency: int

    @property
    def label(self) -> str:
        return record_profile_label(self.record, self.concurrency)


def missed_goal_targets(records: Sequence[CellRecord], paired: Sequence[PairRatio] = ()) -> list[Target]:
    """The cells (one launch each, the last) and concurrencies of every goal the run missed (goals 1-3
    judged on the run's goal pairs measured interleaved, where it has them)."""
    wanted = {label for goal in evaluate(records, {}, paired) if goal.met is False for label in goal.cells}
    found: dict[str, Target] = {}
    for record in records:
        for level in record.load:
            target = Target(record, level.concurrency)
            if target.label in wanted:
                found[target.label] = target  # a later launch of the same cell replaces an earlier one
    return [found[label] for label in sorted(found)]


def micro_benchmarks_missing() -> str | None:
    """Why the micro-benchmarks cannot run here, or None."""
    if not BENCHMARKS.is_dir():
        return f"the micro-benchmarks are part of the source checkout ({BENCHMARKS} is missing)"
    if importlib.util.find_spec("pytest_benchmark") is None:
        return "pytest-benchmark is not installed (pip install 'forkwise[bench]')"
    return None


def run_micro_benchmarks(run_dir: Path) -> Path:
    """pytest-benchmark over benchmarks/, its JSON into the run's folder. Each benchmark is bounded
    by pytest-timeout (pyproject's timeout); the process group is ours and is stopped in any case."""
    missing = micro_benchmarks_missing()
    if missing:
        raise ConfigError(f"cannot run the micro-benchmarks: {missing}")
    out = bench_path(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", str(BENCHMARKS), "-q", "-p", "no:cacheprovider", "--benchmark-only",
            f"--benchmark-json={out}"]
    with ProcessGroup(argv, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, None, cwd=BENCHMARKS.parent) as group:
        code = group.wait()  # the group (model servers the benchmarks start) is stopped on leaving
    if code != 0 or not out.exists():
        raise ConfigError(f"the micro-benchmarks failed (pytest exit {code}); run `tox -e bench` to see why")
    return out


ProfileCell = Callable[[Target, Path], CellRecord]


def profile_missed_goals(records: Sequence[CellRecord], run_dir: Path,
                         profile_cell: ProfileCell) -> dict[str, CellRecord]:
    """Launch every cell of a missed goal once more with py-spy (``profile_cell`` runs one cell's
    process at one concurrency); returns those launches' records by profile label (not the run's
    records: a profiled launch is slowed by its profiler and is not a measurement)."""
    folder = profiles_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paired = measured_pairs(load_goal_rounds(run_dir / GOAL_ROUNDS_FILE))
    return {target.label: profile_cell(target, folder) for target in missed_goal_targets(records, paired)}


def cell_of(record: CellRecord) -> Cell:
    """The matrix cell a record measured."""
    return record.cell


def collect(run_dir: Path, records: Sequence[CellRecord], profile: Profile, home: Path) -> dict:
    """Take the run's goal evidence into its folder (see the module's doc); returns what run.json
    keeps of it. A part that cannot be taken is said there and on stderr, and the run goes on:
    its cells' results stand without it."""
    from forkwise.matrix.run.cell_process import run_cell_process

    said: dict = {}
    missing = micro_benchmarks_missing()
    if missing:
        said["bench"] = f"not run: {missing}"
    else:
        try:
            said["bench"] = str(run_micro_benchmarks(run_dir).relative_to(run_dir))
        except ConfigError as exc:
            said["bench"] = f"failed: {exc}"
    if find_py_spy() is None:
        said["profiles"] = "not taken: py-spy is not installed (pip install 'forkwise[profile]')"
    else:
        def profile_cell(target: Target, folder: Path) -> CellRecord:
            at_level = dataclasses.replace(
                profile, load=dataclasses.replace(profile.load, levels=(target.concurrency,)))
            print(f"forkwise: profiling {target.label} (a missed goal's cell)", file=sys.stderr)
            return run_cell_process(cell_of(target.record), at_level, home, profile_dir=folder)

        launches = profile_missed_goals(records, run_dir, profile_cell)
        said["profiles"] = {label: record.verdict.value for label, record in launches.items()}
    for part, what in said.items():
        print(f"forkwise: goal evidence, {part}: {what}", file=sys.stderr)
    return said
