"""What differs between the environments of two runs: the code (commit, packages), the platform
(kernel, Python), the hardware (CPU, cores, memory, GPU) and the host's label, from the records'
own ``Environment``. ``compare`` names these beside its flags, so a user can tell a change of
their own from a change of machine, kernel or library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forkwise.matrix.records.types import CellRecord, Environment

ASPECTS: tuple[tuple[str, Callable[[Environment], str]], ...] = (
    ("git commit", lambda e: e.git_commit),
    ("kernel and platform", lambda e: e.platform),
    ("Python", lambda e: e.python),
    ("CPU", lambda e: e.cpu_model),
    ("cores", lambda e: str(e.cores)),
    ("memory (GB)", lambda e: f"{e.memory_gb:g}"),
    ("GPU", lambda e: " ".join(x for x in (e.gpu_name, e.gpu_driver) if x)),
    ("host label", lambda e: e.host_label),
)


@dataclass(frozen=True)
class EnvironmentDifference:
    """One aspect whose values differ between the runs (each run's distinct values, in order seen)."""

    aspect: str
    a: tuple[str, ...]
    b: tuple[str, ...]


def _values(records: Sequence[CellRecord], read: Callable[[Environment], str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(read(r.environment) or "-" for r in records))


def environment_differences(a: Sequence[CellRecord], b: Sequence[CellRecord]) -> tuple[EnvironmentDifference, ...]:
    """Every aspect, and every package, whose values are not the same in both runs."""
    found = []
    for aspect, read in ASPECTS:
        values_a, values_b = _values(a, read), _values(b, read)
        if set(values_a) != set(values_b):
            found.append(EnvironmentDifference(aspect, values_a, values_b))
    packages = sorted({name for r in (*a, *b) for name in r.environment.packages})
    for name in packages:
        read_package = _package_version(name)
        values_a, values_b = _values(a, read_package), _values(b, read_package)
        if set(values_a) != set(values_b):
            found.append(EnvironmentDifference(f"package {name}", values_a, values_b))
    return tuple(found)


def _package_version(name: str) -> Callable[[Environment], str]:
    return lambda e: e.packages.get(name, "absent")
