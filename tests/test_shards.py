"""Shards: a deterministic split of a profile's cells, balanced by expected duration, the same on every
host; `forkwise matrix --shard K/N` runs one; the quick profile as 2 shards, merged, is the unsharded run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkwise.cli import main
from forkwise.errors import ConfigError
from forkwise.matrix import commands
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.records.hosts import Shard, parse_shard
from forkwise.matrix.records.jsonl import read_records
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run import environment, runner
from forkwise.matrix.run.runner import load_profile
from forkwise.matrix.run.shards import estimate_s, shard_cells, split
from host_pace import command_bound_s, quick_bound_s

FIXTURE = Path(__file__).parent / "fixtures" / "hosts" / "ci-epyc-2"


@pytest.mark.parametrize("text, expected", [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 4/4 ", Shard(4, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected and str(expected) == text.strip()


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "-1/2", "2", "a/b", "1/2/3", ""])
def test_parse_shard_refuses_what_is_not_k_of_n(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("name", ["quick", "default", "reliability", "full"])
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_cell_in_exactly_one_shard_and_the_shards_balanced(name, count):
    profile = load_profile(name)
    cells = list(profile.cells)
    shards = split(cells, profile, count)
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in cells)
    for shard in shards:  # each shard keeps the profile's order
        assert [c.id for c in shard] == [c.id for c in cells if c in shard]
    # Longest first to the least loaded shard: no shard ends more than one cell above another.
    work = [sum(estimate_s(c, profile) for c in s) for s in shards]
    assert max(work) - min(work) <= max(estimate_s(c, profile) for c in cells) + 1e-9


def test_a_shard_is_a_function_of_profile_only_and_n():
    profile = load_profile("default")
    only = runner.parse_only(["server=uwsgi,gunicorn-sync"])
    first = [c.id for c in shard_cells(profile.select(only), profile, Shard(2, 3))]
    assert first == [c.id for c in shard_cells(profile.select(only), profile, Shard(2, 3))]
    # Another --only or another N is another split; the whole profile too.
    assert first != [c.id for c in shard_cells(list(profile.cells), profile, Shard(2, 3))]
    assert first != [c.id for c in shard_cells(profile.select(only), profile, Shard(2, 4))]


def test_every_host_computes_the_same_split():
    """Another process, with another hash seed (set and dict order must not leak in), splits alike."""
    code = ("import json; from forkwise.matrix.run.runner import load_profile, parse_only; "
            "from forkwise.matrix.run.shards import split; p = load_profile('reliability'); "
            "cells = p.select(parse_only(['strategy=lazy,control,child-process'])); "
            "print(json.dumps([[c.id for c in s] for s in split(cells, p, 3)]))")
    outputs = set()
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=command_bound_s(),
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        outputs.add(proc.stdout.strip())
    profile = load_profile("reliability")
    here = split(profile.select(runner.parse_only(["strategy=lazy,control,child-process"])), profile, 3)
    assert outputs == {json.dumps([[c.id for c in s] for s in here])}


def test_estimates_follow_the_plan():
    profile = load_profile("reliability")
    scenario = next(c for c in profile.cells if c.scenario != "steady")
    steady = scenario.replace(scenario="steady")
    longer = dataclasses.replace(profile, load=dataclasses.replace(profile.load, scenario_duration_s=30.0))
    assert estimate_s(scenario, longer) > estimate_s(scenario, profile)  # a scenario cell by its window
    assert estimate_s(steady, longer) == estimate_s(steady, profile)
    twice = dataclasses.replace(profile, load=dataclasses.replace(profile.load, repeats=2 * profile.load.repeats))
    assert estimate_s(steady, twice) == 2 * estimate_s(steady, profile)  # every launch counts
    open_loop = dataclasses.replace(profile, load=dataclasses.replace(profile.load, mode="open"))
    assert estimate_s(steady, open_loop) > estimate_s(steady, profile)  # and its offered rates


def test_more_shards_than_cells_is_refused():
    profile = load_profile("quick")
    with pytest.raises(ConfigError, match="at most 10 shards"):
        shard_cells(list(profile.cells), profile, Shard(11, 11))


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "error: --shard 3/2: K must be from 1 to N"),
    (["--shard", "two"], "error: --shard: expected K/N"),
    (["--shard", "11/11"], "error: --shard 11/11: the profile 'quick' selects 10 cells"),
])
def test_cli_refuses_a_bad_shard(args, message, capsys, tmp_path):
    assert main(["matrix", "--profile", "quick", "--out", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_cli_refuses_an_empty_host_label(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["matrix", "--profile", "quick", "--host-label", " "])
    assert exc.value.code == 2 and "--host-label" in capsys.readouterr().err


def test_host_label_from_the_environment_else_the_hostname(monkeypatch):
    monkeypatch.setenv(environment.HOST_LABEL_VAR, " ci-large ")
    assert environment.host_label() == "ci-large"
    monkeypatch.delenv(environment.HOST_LABEL_VAR)
    assert environment.host_label() == environment.host_label() != ""  # stable for a machine
    data = json.loads((FIXTURE / "records.jsonl").read_text().splitlines()[0])
    del data["environment"]["host_label"]  # a record made before the field existed still reads
    assert CellRecord.from_dict(data).environment.host_label == ""


def _fake_cell_record(cell: runner.Cell) -> CellRecord:
    data = json.loads((FIXTURE / "records.jsonl").read_text().splitlines()[0])  # control, OK, loaded
    data.update(strategy=cell.strategy, server=cell.server, workers=cell.workers, model=cell.model)
    return CellRecord.from_dict(data)


def test_a_shard_runs_its_cells_only_and_says_so_in_run_json(monkeypatch, tmp_path):
    """`run_matrix` with a shard: the cell processes are stood in for; what is checked is the
    selection, the records and run.json."""
    ran = []
    monkeypatch.setattr(runner, "ensure_spec", lambda *a, **k: None)
    monkeypatch.setattr(runner, "run_cell_process",
                        lambda cell, *a, **k: ran.append(cell.id) or _fake_cell_record(cell))
    only = ["server=gunicorn-sync"]
    assert commands.run_matrix("quick", only, tmp_path, resume=False, plain=True, home=tmp_path,
                             shard=Shard(2, 2)) == 0
    profile = load_profile("quick")
    expected = [c.id for c in shard_cells(profile.select(runner.parse_only(only)), profile, Shard(2, 2))]
    assert sorted(set(ran)) == sorted(expected) and len(expected) == 2
    assert {r.cell_id for r in read_records(tmp_path / "records.jsonl")} == set(expected)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["shard"] == {"index": 2, "count": 2} and info["only"] == {"server": ["gunicorn-sync"]}
    assert info["profile"] == "quick" and info["schema_version"] == 1 and info["cells"] == 2


# --- the quick profile as 2 shards, on this host, merged ------------------------------------


# The shards, and quick_run when this test is the first to ask for it: two runs of quick at most.
@pytest.mark.integration
@pytest.mark.timeout(2 * quick_bound_s())
def test_two_shards_merged_are_the_unsharded_run(quick_run, home, tmp_path):
    """Same cells and the same verdicts as one unsharded run of quick (conftest's quick_run), in one report."""
    base = [sys.executable, "-m", "forkwise", "--home", str(home)]
    quick = load_profile("quick")
    shards = []
    for k in (1, 2):
        out = tmp_path / f"shard{k}"
        proc = subprocess.run([*base, "matrix", "--profile", "quick", "--shard", f"{k}/2", "--out", str(out),
                               "--plain", "--host-label", "this-host"],
                              capture_output=True, text=True, timeout=quick_bound_s())
        assert proc.returncode == 0, proc.stderr[-3000:]
        share = len(shard_cells(quick.cells, quick, Shard(k, 2)))
        assert f"forkwise: shard {k}/2 of profile 'quick': {share} of {len(quick.cells)} cells" in proc.stderr
        shards.append(out)
    merged = tmp_path / "merged"
    proc = subprocess.run([*base, "merge", *map(str, shards), "--out", str(merged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_shard = [{r.cell_id for r in read_records(s / "records.jsonl")} for s in shards]
    assert per_shard[0] and per_shard[1] and not per_shard[0] & per_shard[1]
    records = combine_all(read_records(merged / "results.json"))
    assert {r.environment.host_label for r in records} == {"this-host"}  # one host: one section
    unsharded = {r.cell_id: r.verdict for r in quick_run[1].values()}
    assert {r.cell_id: r.verdict for r in records} == unsharded
    assert {r.cell_id: r.launches for r in records} == {r.cell_id: r.launches for r in quick_run[1].values()}
    text = (merged / "RESULTS.md").read_text()
    assert text.count("\n# ") + text.startswith("# ") == 1 and text.count("## Host this-host") == 1
    assert (merged / "results.html").stat().st_size > 0 and (merged / "results.csv").stat().st_size > 0
