"""The matrix's commands, each a phase and then its publishing: ``forkwise matrix`` runs a profile
(``run.runner``) and publishes the run (``publish.folder``); ``forkwise merge`` merges run folders
(``run.merge``) and publishes the merged one; ``forkwise evidence`` takes a run's goal evidence and
publishes it again. The one module that sees both the run and the publishing phase."""

from __future__ import annotations

import sys
from pathlib import Path

from forkwise.matrix.publish.folder import report_dir
from forkwise.matrix.publish.hosts import report_merged
from forkwise.matrix.records.hosts import WHOLE, Shard
from forkwise.matrix.run import merge as merging
from forkwise.matrix.run import runner


def run_matrix(profile: str, only: list[str], out: Path | None, resume: bool, plain: bool, home: Path,
               p99_ms: float | None = None, memory_mb: float | None = None, shard: Shard = WHOLE) -> int:
    """Run a profile's cells, then publish the run; 0 (nothing to run is not an error)."""
    done = runner.run_matrix(profile, only, out, resume, plain, home, p99_ms=p99_ms, memory_mb=memory_mb,
                             shard=shard)
    if done is None:
        return 0
    paths = report_dir(done.out, done.run_info)
    print(f"forkwise: {done.cells} cells, {done.launches} launches in {done.run_info['duration_s']:.0f} s; "
          f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def merge(dirs: list[Path], out: Path, allow_missing: bool = False) -> tuple[merging.Merged, list[Path]]:
    """Merge run folders into `out`, then publish it: (what was merged, the report's files)."""
    merged = merging.merge(dirs, out, allow_missing=allow_missing)
    return merged, report_merged(merged.out)


def add_goal_evidence(out: Path, home: Path) -> list[Path]:
    """Take a run's goal evidence on this machine, then publish the run again."""
    return report_dir(out, runner.add_goal_evidence(out, home))
