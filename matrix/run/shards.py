"""Split a profile's cells into N shards of about equal expected duration, the same on every host.

Shard K of N is a pure function of (profile, --only, N): each cell's duration is estimated from the
profile's plan alone (nothing is measured on the host that asks), and the cells are dealt longest
first to the shard with the least expected work so far (LPT scheduling), ties to the lower shard and
to the earlier cell of the profile. So every runner of a CI matrix computes the same split, and the N
shards together run each cell exactly once. Within a shard, cells keep the profile's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.hosts import Shard
from forkwise.matrix.run.open_loop import OpenLoopPlan
from forkwise.matrix.run.scenarios import recovery_allowance_s, window_s

if TYPE_CHECKING:
    from forkwise.matrix.records.axes import Cell
    from forkwise.matrix.run.profile import Profile

# A launch's fixed cost beyond its load: start the deployment, wait for it, verify it, stop it.
# It only weighs cells against each other for the split; nothing waits on it.
BOOT_ESTIMATE_S = 5.0


def estimate_s(cell: Cell, profile: Profile) -> float:
    """The seconds a cell is expected to take under the profile's plan: each launch's boot estimate,
    warm-up, measured levels and open-loop rates (the top-level passes measure the highest level
    only); a scenario cell its measured window (one launch)."""
    load = profile.load
    if cell.scenario != STEADY:
        allowance = recovery_allowance_s(BOOT_ESTIMATE_S)
        return BOOT_ESTIMATE_S + window_s(load.scenario_duration_s, allowance)[1]
    if not load.levels:  # verification only; a cell without load is launched once
        return BOOT_ESTIMATE_S
    per_launch = BOOT_ESTIMATE_S + load.warmup_s + len(load.levels) * load.duration_s
    if load.mode == "open":  # after the levels, each offered rate: its warm-up and window
        per_launch += (len(load.rates) or load.rate_steps) * (OpenLoopPlan.warmup_s + load.duration_s)
    return load.repeats * per_launch + load.top_level_repeats * (BOOT_ESTIMATE_S + load.warmup_s + load.duration_s)


def split(cells: Sequence[Cell], profile: Profile, count: int) -> list[list[Cell]]:
    """All `count` shards of `cells`, each in the cells' own order."""
    # Whole tenths of a second: the split must not hang on the last bit of a float sum.
    weights = [round(10 * estimate_s(cell, profile)) for cell in cells]
    loads = [0] * count
    members: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(cells)), key=lambda i: (-weights[i], i)):
        lightest = min(range(count), key=lambda k: (loads[k], k))
        members[lightest].append(i)
        loads[lightest] += weights[i]
    return [[cells[i] for i in sorted(shard)] for shard in members]


def shard_cells(cells: Sequence[Cell], profile: Profile, shard: Shard) -> list[Cell]:
    """The cells of one shard. More shards than cells is refused: a shard must have a cell to run."""
    if shard.count > len(cells):
        raise ConfigError(f"--shard {shard}: the profile {profile.name!r} selects {len(cells)} cells; "
                          f"split it into at most {len(cells)} shards")
    return split(cells, profile, shard.count)[shard.index - 1]


def expected_s(cells: Sequence[Cell], profile: Profile) -> float:
    """The expected seconds of a list of cells (for progress lines)."""
    return sum(estimate_s(cell, profile) for cell in cells)
