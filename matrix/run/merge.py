"""Merge run folders (the shards of a profile, runs on several hosts) into one report, the host an axis.

Each input is a folder one ``forkwise matrix`` run wrote: run.json (profile, plan, shard, --only) and
records.jsonl. A host is the hardware a record was measured on (CPU model and count, memory, GPU)
with the user's label for it (``Environment.host_label``); two records of one cell on different
hosts are two measurements, never pooled. Merge refuses, with a MergeError that names the folders:
records of another schema version, runs of different profiles or plans, a cell measured twice on one
host, a shard given twice, and a missing shard (shard k of N absent for a host label and --only),
unless ``allow_missing``: then the report names the missing shards and their cells at its top.

The output folder holds one run folder per host, ``hosts/<name>/`` (records.jsonl and run.json, so
``forkwise report`` and ``forkwise compare`` work on it as on any run), and the merged report: a
table of the hosts, the cells' verdicts side by side with one column per host, and one section per
host made of the normal report of that host's records only (its controls, its recommendation).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from forkwise.errors import ConfigError, MergeError, RecordError
from forkwise.matrix.records.hosts import HOSTS_DIR, Host, MissingShard, Shard
from forkwise.matrix.records.jsonl import RECORDS_FILE, append_record, json_lines
from forkwise.matrix.records.run_info import RUN_INFO_FILE, RunInfo
from forkwise.matrix.records.types import SCHEMA_VERSION, CellRecord
from forkwise.matrix.run.shards import shard_cells

RUN_INFO = RUN_INFO_FILE
PLAN_KEYS = ("load", "limits", "gpu_policy")  # run.json keys that must agree: how every cell was measured


# --- the inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """One ``forkwise matrix`` run: what its run.json says and every launch it recorded."""

    path: Path
    info: RunInfo
    records: tuple[CellRecord, ...]

    @property
    def shard(self) -> Shard:
        return Shard.from_dict(self.info.shard)

    @property
    def only(self) -> dict[str, list[str]]:
        return dict(self.info.only or {})

    @property
    def label(self) -> str:
        return self.records[0].environment.host_label

    def source(self) -> dict:
        """What the merged run.json says of this input."""
        return {"folder": str(self.path), "shard": str(self.shard), "only": self.only, "host_label": self.label,
                "cells": len({r.cell_id for r in self.records}), "duration_s": self.info.duration_s}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path}: cannot read it ({exc})") from None


def _read_raw(folder: Path) -> tuple[dict, list[dict]]:
    """A folder's run.json and its records as JSON objects, before any is decoded."""
    if not folder.is_dir():
        raise MergeError(f"{folder}: no such folder")
    info_path, records_path = folder / RUN_INFO, folder / RECORDS_FILE
    if not info_path.is_file():
        raise MergeError(f"{folder}: no {RUN_INFO}; give the folders `forkwise matrix --out` wrote")
    info = _read_json(info_path)
    if not isinstance(info, dict):
        raise MergeError(f"{info_path}: expected a JSON object")
    if "hosts" in info:
        raise MergeError(f"{folder} is the output of `forkwise merge`; give the folders it was made from, "
                         f"or its {HOSTS_DIR}/ folders")
    if not records_path.is_file():
        raise MergeError(f"{folder}: no {RECORDS_FILE}")
    raw = []
    for lineno, data in json_lines(records_path, records_path.read_text(encoding="utf-8"), MergeError):
        if not isinstance(data, dict):
            raise MergeError(f"{records_path}:{lineno}: not a record")
        raw.append(data)
    if not raw:
        raise MergeError(f"{records_path} holds no records")
    return info, raw


def _check_schema(raw: dict[Path, list[dict]]) -> None:
    versions = {folder: sorted({str(r.get("schema_version")) for r in records}) for folder, records in raw.items()}
    if {v for vs in versions.values() for v in vs} != {str(SCHEMA_VERSION)}:
        listing = "; ".join(f"{folder}: schema version {', '.join(vs)}" for folder, vs in versions.items())
        raise MergeError(f"the records are not all of schema version {SCHEMA_VERSION}, the one this forkwise "
                         f"reads ({listing}); merge runs of one schema version")


def load_folders(dirs: Sequence[Path]) -> list[RunFolder]:
    """Read every folder; refuse a folder given twice and records of another schema version."""
    paths = [Path(d) for d in dirs]
    repeated = [str(p) for p, n in Counter(p.resolve() for p in paths).items() if n > 1]
    if repeated:
        raise MergeError(f"folder given more than once: {', '.join(repeated)}")
    raw = {path: _read_raw(path) for path in paths}
    _check_schema({path: records for path, (_, records) in raw.items()})
    folders = []
    for path, (info, records) in raw.items():
        try:
            decoded = tuple(CellRecord.from_dict(r) for r in records)
        except RecordError as exc:
            raise MergeError(f"{path / RECORDS_FILE}: {exc}") from None
        folder = RunFolder(path, RunInfo.from_dict(info), decoded)
        labels = sorted({r.environment.host_label for r in decoded})
        if len(labels) > 1:
            raise MergeError(f"{path} holds records of several host labels ({', '.join(map(repr, labels))}); "
                             "a run folder is one host's: resume a run on the host that started it")
        folders.append(folder)
    return folders


# --- the checks ----------------------------------------------------------------------------


def check_one_plan(folders: Sequence[RunFolder]) -> None:
    """Every folder ran the same profile with the same plan: one report compares like with like."""
    first = folders[0]
    for folder in folders[1:]:
        if folder.info.profile != first.info.profile:
            raise MergeError(f"{folder.path} ran profile {folder.info.profile!r} and {first.path} profile "
                             f"{first.info.profile!r}; merge runs of one profile")
        for key in PLAN_KEYS:
            if getattr(folder.info, key) != getattr(first.info, key):
                raise MergeError(f"{folder.path} and {first.path} ran profile {first.info.profile!r} with "
                                 f"different {key} ({getattr(folder.info, key)} and {getattr(first.info, key)}); "
                                 "merge runs of one plan")


def check_each_cell_once(folders: Sequence[RunFolder]) -> None:
    """A cell is measured once per host: two folders holding it for one host would be pooled."""
    where: dict[tuple[Host, str], Path] = {}
    for folder in folders:
        for host, cell in sorted({(Host.of(r), r.cell_id) for r in folder.records}, key=lambda hc: hc[1]):
            if (host, cell) in where:
                raise MergeError(f"cell {cell} was measured twice on host {host.label!r} ({host.hardware}): in "
                                 f"{where[host, cell]} and {folder.path}; each cell is measured once per host")
            where[host, cell] = folder.path


def planned_cells(info: RunInfo, shard: Shard) -> tuple[str, ...] | None:
    """The cells of a shard as this checkout's profile splits them, or None when its profile is not
    here or its plan differs from the run's (the split would then differ too)."""
    from forkwise.matrix.run.profile import load_profile

    try:
        profile = load_profile(str(info.profile))
    except ConfigError:
        return None
    if json.loads(json.dumps(dataclasses.asdict(profile.load))) != info.load:  # as run.json holds it
        return None
    cells = profile.select({axis: set(values) for axis, values in (info.only or {}).items()})
    if not cells or shard.count > len(cells):
        return None
    return tuple(c.id for c in shard_cells(cells, profile, shard))


def check_shards(folders: Sequence[RunFolder]) -> list[MissingShard]:
    """Each shard set (host label, --only, N) has shard 1..N once each; returns the missing ones."""
    sets: dict[tuple[str, str, int], dict[int, RunFolder]] = {}
    for folder in folders:
        key = (folder.label, json.dumps(folder.only, sort_keys=True), folder.shard.count)
        seen = sets.setdefault(key, {})
        if folder.shard.index in seen:
            raise MergeError(f"shard {folder.shard} of host {folder.label!r} is given twice: "
                             f"{seen[folder.shard.index].path} and {folder.path}")
        seen[folder.shard.index] = folder
    missing = []
    for (label, only, count), seen in sets.items():
        for index in range(1, count + 1):
            if index in seen:
                continue
            shard = Shard(index, count)
            elsewhere = tuple(sorted(other for (other, o, n), s in sets.items()
                                     if other != label and o == only and n == count and index in s))
            missing.append(MissingShard(shard, label, json.loads(only),
                                        planned_cells(next(iter(seen.values())).info, shard), elsewhere))
    return missing


# --- the merged folder ---------------------------------------------------------------------


@dataclass(frozen=True)
class Merged:
    out: Path  # the merged run's folder (``commands.merge`` publishes it)
    missing: list[MissingShard]
    lines: list[str]  # what to say of the missing shards, one line each


def host_folder_names(hosts: Iterable[Host]) -> dict[Host, str]:
    """A folder name per host: its label (or its hardware, when another host has the same label)."""
    hosts = list(hosts)
    counts = Counter(h.label for h in hosts)
    names: dict[Host, str] = {}
    for host in hosts:
        text = host.label if host.label and counts[host.label] == 1 else f"{host.label or 'host'} {host.hardware}"
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "host"
        taken = set(names.values())
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        names[host] = unique
    return names


def _host_run_info(base: dict, host: Host, name: str, parts: list[tuple[RunFolder, list[CellRecord]]],
                   missing: list[MissingShard]) -> dict:
    """run.json of one host's folder: the plan, the host, and its parts added up."""
    started = sorted(str(f.info.started_at) for f, _ in parts if f.info.started_at)
    return {
        **base,
        "started_at": started[0] if started else None,
        # The time its shards spent measuring, added up (they may have run side by side).
        "duration_s": round(sum(float(f.info.duration_s or 0) for f, _ in parts), 1),
        "cells": len({r.cell_id for _, records in parts for r in records}),
        "launches": sum(len(records) for _, records in parts),
        "host": host.to_dict(), "host_name": name,
        "sources": [folder.source() for folder, _ in parts],
        "missing_shards": [m.to_dict() for m in missing if m.label == host.label],
    }


def merge(dirs: Sequence[Path], out: Path, allow_missing: bool = False) -> Merged:
    """Check the folders, write one run folder per host into `out`, and the merged report."""
    folders = load_folders(dirs)
    check_one_plan(folders)
    # A host folder of an earlier merge that went ahead without a shard still lacks it.
    missing = check_shards(folders) + [MissingShard.from_dict(m) for f in folders for m in f.info.missing_shards or ()]
    first = folders[0].info
    profile = str(first.profile)
    lines = [m.describe(profile) for m in missing]
    if missing and not allow_missing:
        raise MergeError("missing " + "; missing ".join(lines) + ". Give every shard's folder, or pass "
                         "--allow-missing to publish without them (the report names them missing)")
    check_each_cell_once(folders)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"--out {out} is not empty; merge into a new folder")
    by_host: dict[Host, list[tuple[RunFolder, list[CellRecord]]]] = {}
    for folder in folders:
        for host in sorted({Host.of(r) for r in folder.records}, key=dataclasses.astuple):
            by_host.setdefault(host, []).append((folder, [r for r in folder.records if Host.of(r) == host]))
    hosts = sorted(by_host, key=dataclasses.astuple)
    names = host_folder_names(hosts)
    base = {"profile": profile, "description": first.description or "", "schema_version": SCHEMA_VERSION,
            **{key: getattr(first, key) for key in PLAN_KEYS}, "recommend": first.recommend,
            "command": " ".join(["forkwise", *sys.argv[1:]]) if "merge" in sys.argv[1:] else "forkwise merge",
            "merged_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    for host in hosts:
        host_dir = out / HOSTS_DIR / names[host]
        host_dir.mkdir(parents=True)
        for _, records in by_host[host]:
            for record in records:
                append_record(host_dir / RECORDS_FILE, record)
        info = _host_run_info(base, host, names[host], by_host[host], missing)
        (host_dir / RUN_INFO).write_text(json.dumps(info, indent=2))
    merged_info = {**base,
                   "hosts": [{"name": names[h], "folder": f"{HOSTS_DIR}/{names[h]}", **h.to_dict()} for h in hosts],
                   "sources": [f.source() for f in folders], "missing_shards": [m.to_dict() for m in missing]}
    (out / RUN_INFO).write_text(json.dumps(merged_info, indent=2))
    return Merged(out, missing, lines)
