"""Where a run's goal evidence was made: the micro-benchmarks' JSON (bench/) and the py-spy
profiles (profiles/), each with its provenance (commit, date, host). ``goals_report`` uses only
what was made on the run's own host (see ``analysis.goals``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forkwise.matrix.records.types import CellRecord, Environment


@dataclass(frozen=True)
class Host:
    """What tells one machine from another in what records and benchmarks keep."""

    cpu_model: str
    cores: int
    python: str

    @classmethod
    def of(cls, env: Environment) -> Host:
        return cls(env.cpu_model, env.cores, env.python)

    def describe(self) -> str:
        return f"{self.cpu_model}, {self.cores} cores, Python {self.python}"


def run_host(records: Sequence[CellRecord]) -> Host | None:
    """The host most of the run's records were measured on."""
    hosts = Counter(Host.of(r.environment) for r in records)
    return hosts.most_common(1)[0][0] if hosts else None


@dataclass(frozen=True)
class Provenance:
    commit: str
    date: str
    host: Host

    def describe(self) -> str:
        return f"commit {self.commit}, {self.date}, on {self.host.describe()}"


@dataclass(frozen=True)
class Bench:
    """The micro-benchmarks' results, by test name, and where they were measured."""

    results: dict[str, dict]
    provenance: Provenance


def load_bench(path: Path) -> Bench | None:
    """pytest-benchmark JSON -> Bench; None when absent."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    machine, commit = doc.get("machine_info", {}), doc.get("commit_info", {})
    host = Host(machine.get("cpu", {}).get("brand_raw", "unknown"), machine.get("cpu", {}).get("count", 0),
                machine.get("python_version", "unknown"))
    commit_id = str(commit.get("id", "unknown"))[:12] + ("+modified" if commit.get("dirty") else "")
    results = {b["name"]: {**b.get("stats", {}), **b.get("extra_info", {})} for b in doc.get("benchmarks", [])}
    return Bench(results, Provenance(commit_id, str(doc.get("datetime", "unknown")), host))


PROVENANCE_SUFFIX = ".provenance.json"


def write_profile_provenance(folder: Path, label: str, env: Environment) -> Path:
    """Beside a cell's profiles: where and from what code they were taken."""
    path = Path(folder) / f"{label}{PROVENANCE_SUFFIX}"
    path.write_text(json.dumps({"commit": env.git_commit, "date": env.date, "cpu_model": env.cpu_model,
                                "cores": env.cores, "python": env.python}, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Profiles:
    """One cell's py-spy summaries, [(process, summary text)], and where they were taken (None:
    no provenance file, so nothing says)."""

    summaries: list[tuple[str, str]]
    provenance: Provenance | None


def _read_provenance(path: Path) -> Provenance | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Provenance(str(data["commit"]), str(data["date"]),
                      Host(str(data["cpu_model"]), int(data["cores"]), str(data["python"])))


def load_profiles(folder: Path) -> dict[str, Profiles]:
    """py-spy summaries in a folder: {cell label: Profiles}."""
    found: dict[str, list[tuple[str, str]]] = {}
    if Path(folder).is_dir():
        for path in sorted(Path(folder).glob("*.txt")):
            label, _, process = path.stem.rpartition(".")
            found.setdefault(label, []).append((process, path.read_text()))
    return {label: Profiles(summaries, _read_provenance(Path(folder) / f"{label}{PROVENANCE_SUFFIX}"))
            for label, summaries in found.items()}


