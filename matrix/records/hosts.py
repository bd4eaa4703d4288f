"""Where a run's records came from: its shard of the profile, the host it was measured on, and the
shards a merged run lacks. run.json carries them; ``run.merge`` writes a merged run's folder
(``hosts/<name>/`` per host) and ``publish.hosts`` renders it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forkwise.errors import ConfigError
from forkwise.matrix.records.types import CellRecord

HOSTS_DIR = "hosts"  # a merged run's folder holds one run folder per host under it


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"--shard {self.index}/{self.count}: K must be from 1 to N, and N at least 1 (e.g. 1/4)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Shard:
        """A run.json's shard; a run without one ran every cell: shard 1/1."""
        if data is None:
            return cls(1, 1)
        return cls(int(data["index"]), int(data["count"]))


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """'2/4' -> Shard(2, 4); anything else is a ConfigError that says what was expected."""
    index, sep, count = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        return Shard(int(index), int(count))
    except ValueError:
        raise ConfigError(f"--shard: expected K/N with whole numbers, e.g. 1/4; got {text!r}") from None


@dataclass(frozen=True)
class Host:
    """The hardware a record was measured on, and the user's label for it."""

    label: str
    cpu_model: str
    cores: int
    memory_gb: float
    gpu_name: str

    @classmethod
    def of(cls, record: CellRecord) -> Host:
        env = record.environment
        return cls(env.host_label, env.cpu_model, env.cores, env.memory_gb, env.gpu_name)

    @property
    def hardware(self) -> str:
        text = f"{self.cpu_model}, {self.cores} cores, {self.memory_gb:g} GB memory"
        return text + (f", {self.gpu_name}" if self.gpu_name else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MissingShard:
    shard: Shard
    label: str
    only: dict
    cells: tuple[str, ...] | None  # the cells it holds, when this checkout's profile has the run's plan
    elsewhere: tuple[str, ...] = ()  # host labels whose folders hold this shard

    def describe(self, profile: str) -> str:
        where = f" --only {json.dumps(self.only, sort_keys=True)}" if self.only else ""
        text = f"shard {self.shard} of profile {profile!r}{where} on host {self.label!r}"
        if self.cells is not None:
            text += f" ({len(self.cells)} cells: {', '.join(self.cells)})"
        if self.elsewhere:
            text += (f"; host {', '.join(map(repr, self.elsewhere))} ran it: the shards of one run need one "
                     "host label (FORKWISE_HOST_LABEL or --host-label)")
        return text

    def to_dict(self) -> dict:
        return {"shard": self.shard.to_dict(), "host_label": self.label, "only": self.only,
                "cells": list(self.cells) if self.cells is not None else None, "elsewhere": list(self.elsewhere)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MissingShard:
        cells = data.get("cells")
        return cls(Shard.from_dict(data["shard"]), data["host_label"], data.get("only", {}),
                   tuple(cells) if cells is not None else None, tuple(data.get("elsewhere", ())))
