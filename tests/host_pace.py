"""How long the tests' own waits may last on this host: bounds from a calibration made in the same
session, never seconds tuned on one machine.

The calibration times what dominates a cell's waits, TensorFlow's import, once per session in a
fresh interpreter (2-4 s on one 2-core host, 5-8 s on a slower one or in `tox -e slow`). A test's
backstop is then a count of such imports, so it grows with the host's slowness. The cells keep
their own deadlines, derived from their plans (forkwise.matrix.run.cell_process.cell_deadline_s); these
bounds only stop a stall of forkwise or of a test itself from hanging the suite.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time

# Bounds in imports, each about 3x the most the thing bounded took on an idle 2-core host, where
# several processes importing at once (a server's workers) scale with the import on a slower one.
TEST_IMPORTS = 150  # any one test function (its fixtures are bounded on their own)
CELL_IMPORTS = 60  # one `forkwise cell` process: the longest, a reliability scenario, ~22 imports
COMMAND_IMPORTS = 20  # a forkwise command or script that loads a model at most


@functools.lru_cache(maxsize=1)
def import_s() -> float:
    """Seconds a fresh interpreter takes to import TensorFlow on this host, now."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True)
    return time.perf_counter() - started


def host_bound_s(imports: float) -> float:
    """A bound of `imports` TensorFlow imports on this host, in seconds."""
    return imports * import_s()


def cell_bound_s() -> float:
    return host_bound_s(CELL_IMPORTS)


def command_bound_s() -> float:
    return host_bound_s(COMMAND_IMPORTS)


def quick_bound_s() -> float:
    """The most a run of the quick profile can take: every launch of every cell at its deadline
    (derived from the plan, cell_process.cell_deadline_s); only a stall of forkwise reaches it."""
    from forkwise.matrix.run import cell_process
    from forkwise.matrix.run.profile import load_profile

    profile = load_profile("quick")
    launches = profile.load.repeats + profile.load.top_level_repeats
    return sum(launches * cell_process.cell_deadline_s(cell, profile) for cell in profile.cells)
