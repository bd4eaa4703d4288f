"""What a run says of itself, as the report's header states it: where, when and with what its
records were measured, summarised over every launch (analysis: records and run.json in, facts out)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from forkwise import provenance
from forkwise.matrix.analysis.launches import describe_noise, launch_noise
from forkwise.matrix.analysis.ordering import latest_by_cell
from forkwise.matrix.publish.document import MISSING
from forkwise.matrix.records.run_info import RunInfo, as_run_info
from forkwise.matrix.records.types import HOST_SLOW_RATIO, CellRecord

# (a) header


def summarise(values: Sequence[str], unit: str = "records") -> str:
    """'f2e46e3 (44 records)', or each value with its count, the most common first, when they differ."""
    counts = Counter(values)
    if not counts:
        return MISSING
    return ", ".join(f"{value} ({n} {unit})" for value, n in counts.most_common())


def short_commit(commit: str) -> str:
    head, plus, rest = commit.partition("+")
    return (head[:7] if len(head) == 40 else head) + plus + rest


def packages_summary(records: Sequence[CellRecord]) -> str:
    """Every package any record names: its version, or each version with its count when they differ."""
    names = sorted({name for r in records for name in r.environment.packages})
    parts = []
    for name in names:
        versions = [r.environment.packages.get(name, "absent") for r in records]
        if len(set(versions)) == 1:
            parts.append(f"{name} {versions[0]}")
        else:
            parts.append(f"{name} {summarise(versions)}")
    return ", ".join(parts) or MISSING


def environment_facts(records: Sequence[CellRecord]) -> list[tuple[str, str]]:
    """Where and with what the records were measured, summarised over every one of them."""
    envs = [r.environment for r in records]
    facts = [
        ("machine", summarise([f"{e.cpu_model}, {e.cores} cores, {e.memory_gb:g} GB memory" for e in envs])),
        ("python", summarise([e.python for e in envs])),
        ("platform", summarise([e.platform for e in envs])),
        ("git commit", summarise([short_commit(e.git_commit) for e in envs])),
        ("packages", packages_summary(records)),
        # The records' code above; the code that rendered this report here (a report rendered again
        # by newer code says so).
        ("rendered by", provenance.rendered_by()),
    ]
    gpus = [f"{e.gpu_name}, driver {e.gpu_driver}" for e in envs if e.gpu_name]
    if gpus:
        facts.insert(1, ("GPU", summarise(gpus)))
    return facts


def header_facts(records: Sequence[CellRecord], profile: str, run_info: RunInfo | Mapping[str, Any],
                 launches: Sequence[CellRecord] | None = None) -> list[tuple[str, str]]:
    """`records`: one per cell; `launches`: every launch's record, which the environment facts
    summarise (default: `records`)."""
    launches = records if launches is None else launches
    run_info = as_run_info(run_info)
    facts = [
        ("profile", profile),
        ("date", str(run_info.started_at or (records[0].environment.date if records else MISSING))),
        ("run duration", fmt_duration(run_info.duration_s)),
        ("load driver", _drivers_seen(records) or MISSING),
        ("cells", str(len(latest_by_cell(records)))),
        ("launches per cell", _fmt_launches(records)),
        ("launch-to-launch noise", _fmt_noise(launch_noise(records))),
    ]
    if any(lv.host_slowdown for r in records for lv in r.load):
        facts.append(("host slow spells", _fmt_slow_spells(records, run_info)))
    if run_info.command:
        facts.append(("command", str(run_info.command)))
    if launches:
        facts += environment_facts(launches)
    return facts


def _fmt_slow_spells(records: Sequence[CellRecord], run_info: RunInfo) -> str:
    levels = [lv for r in records for lv in r.load]
    in_slow_spell = sum(lv.launches_slow for lv in levels)
    waited = run_info.quiet_wait_s
    rebased = run_info.probe_rebased or 0
    unprobed = sum(1 for lv in levels if not lv.host_slowdown)
    return (f"{in_slow_spell} launch-levels were measured while the CPU probe ran over {HOST_SLOW_RATIO}x its "
            "reference; they count like every launch (none is set aside)"
            + (f"; {waited:g} s spent waiting for a quiet host" if waited else "")
            + (f"; {unprobed} levels not probed (the deployment was still busy as long after the level as the "
               "level had lasted)" if unprobed else "")
            + (f"; the reference was re-based {rebased} times (every probe since the last was slower)"
               if rebased else ""))


def _fmt_launches(records: Sequence[CellRecord]) -> str:
    counts = sorted({r.launches for r in records})
    text = " or ".join(map(str, counts)) if counts else MISSING
    return text + (" (a cell that failed is not launched again)" if len(counts) > 1 else "")


def _fmt_noise(noise: dict[int, float]) -> str:
    """The run's pooled launch-to-launch spread of rps, per concurrency."""
    return describe_noise(noise) + (
        " relative stdev between launches of a cell (pooled over the OK cells)" if noise else "")


def _drivers_seen(records: Iterable[CellRecord]) -> str:
    return ", ".join(sorted({lv.driver for r in records for lv in r.load}))


def fmt_duration(seconds: Any) -> str:
    if seconds is None:
        return MISSING
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"

