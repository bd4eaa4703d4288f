"""What a run says of itself (run.json), typed: written by ``forkwise matrix`` and ``forkwise merge``,
read by the report.

run.json stays the plain JSON object it always was, so every run folder ever written reads back:
a key a run did not write is None, and a key this version does not know is kept (``extra``) and
written back after the known ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise.errors import RecordError

RUN_INFO_FILE = "run.json"
# A run's own goal evidence, beside its records: the micro-benchmarks and the profiles of missed goals.
BENCH_FOLDER, BENCH_FILE, PROFILES_FOLDER = "bench", "benchmarks.json", "profiles"
FINALISTS_FILE = "finalists.json"  # the finalists stage's rounds (run.finalists)
GOAL_ROUNDS_FILE = "goal_rounds.json"  # the ratio goals' pairs measured interleaved (run.goal_rounds)


def load_stage_file(path: Path, list_key: str) -> dict[str, Any] | None:
    """A stage's JSON file in a run's folder (finalists.json, goal_rounds.json): an object with a list
    under `list_key`; None when the run had no such stage."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        raise RecordError(f"{path}: expected an object with a list of {list_key}")
    return data


@dataclass(frozen=True)
class RunInfo:
    """The fields of run.json, in the order the run writes them."""

    profile: str | None = None
    description: str | None = None
    started_at: str | None = None
    command: str | None = None
    cells: int | None = None
    load: Mapping[str, Any] | None = None  # the profile's load settings
    limits: Mapping[str, Any] | None = None
    gpu_policy: str | None = None
    recommend: Mapping[str, Any] | None = None  # the recommendation's budgets (budgets.Budgets.to_dict)
    shard: Mapping[str, Any] | None = None  # what `forkwise merge` checks: which shard of the profile
    only: Mapping[str, Any] | None = None  # the --only selection, axis -> values
    schema_version: int | None = None
    skipped: Mapping[str, Any] | None = None  # gpu cells skipped on a host without a GPU, and why
    skipped_database: Mapping[str, Any] | None = None  # PostgreSQL cells skipped, and why
    # The finalists stage: its file, its concurrency, why each question stopped (matrix.run.finalists).
    finalists: Mapping[str, Any] | None = None
    # The goal pairs measured interleaved: the file, each pair's rounds and why it stopped (matrix.run.goal_rounds).
    goal_rounds: Mapping[str, Any] | None = None
    # What the run took of its goal evidence, or why not (matrix.goal_evidence.collect).
    goal_evidence: Mapping[str, Any] | None = None
    duration_s: float | None = None
    probe_reference_ms: float | None = None  # the CPU probe (matrix.runner.HostWatch)
    probe_final_reference_ms: float | None = None
    probe_rebased: int | None = None
    quiet_wait_s: float | None = None
    launches: int | None = None
    # A folder that `forkwise merge` wrote: when, and (the merged folder) its hosts' folders.
    merged_at: str | None = None
    hosts: tuple[Mapping[str, Any], ...] | None = None
    # A host's folder that `forkwise merge` wrote:
    host: Mapping[str, Any] | None = None
    host_name: str | None = None
    sources: tuple[Mapping[str, Any], ...] = ()  # the shards' folders it was merged from
    missing_shards: tuple[Mapping[str, Any], ...] | None = None
    # Keys this version does not know (a newer or a hand-edited run.json), kept as they were.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunInfo:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("sources", "missing_shards", "hosts"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, folder: Path) -> RunInfo:
        """A run folder's run.json; an empty RunInfo where the folder has none."""
        path = Path(folder) / RUN_INFO_FILE
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")) if path.exists() else None)

    def to_dict(self) -> dict[str, Any]:
        """run.json's object: the keys that were set, in the run's order, then the unknown ones."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name == "sources" and not value):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return {**out, **self.extra}

    def with_budgets(self, budgets: Mapping[str, Any]) -> RunInfo:
        return dataclasses.replace(self, recommend=dict(budgets))


def as_run_info(info: RunInfo | Mapping[str, Any] | None) -> RunInfo:
    """A RunInfo from what callers hold: one already, or run.json's object (the runner's dict)."""
    return info if isinstance(info, RunInfo) else RunInfo.from_dict(info)


def saved_run_info(out: Path) -> dict:
    """A run folder's run.json as written ({} when the folder has none)."""
    path = Path(out) / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def bench_path(run_dir: Path) -> Path:
    return Path(run_dir) / BENCH_FOLDER / BENCH_FILE


def profiles_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROFILES_FOLDER
