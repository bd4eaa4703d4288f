"""`forkwise merge`: recorded runs of two hosts side by side, never mixed; shards of one host put
back together; every refusal (profile, plan, schema version, a cell twice, a shard twice or missing)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from forkwise.cli import main
from forkwise.errors import MergeError
from forkwise.matrix.commands import merge
from forkwise.matrix.publish.folder import report_dir
from forkwise.matrix.publish.hosts import read_hosts, side_by_side
from forkwise.matrix.records.hosts import Shard
from forkwise.matrix.records.jsonl import read_records
from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run.profile import load_profile
from forkwise.matrix.run.shards import shard_cells

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"
EPYC, H200 = FIXTURES / "ci-epyc-2", FIXTURES / "gpu-h200"  # recorded: see fixtures/hosts/README.md


def copy_run(src: Path, dest: Path, info: dict | None = None, keep=lambda data: True, edit=lambda data: None) -> Path:
    """A copy of a recorded run folder: run.json updated with `info`, the records kept and edited."""
    dest.mkdir(parents=True)
    run = json.loads((src / "run.json").read_text()) | (info or {})
    (dest / "run.json").write_text(json.dumps(run))
    lines = []
    for line in (src / "records.jsonl").read_text().splitlines():
        data = json.loads(line)
        if keep(data):
            edit(data)
            lines.append(json.dumps(data))
    (dest / "records.jsonl").write_text("\n".join(lines) + "\n")
    return dest


def shard_of(src: Path, dest: Path, shard: Shard, label: str | None = None) -> Path:
    """Shard k/N of a recorded run, cut as `forkwise matrix --shard` splits that run's cells under
    this checkout's plan of its profile (which run.json then states)."""
    info = json.loads((src / "run.json").read_text())
    profile = load_profile(info["profile"])
    load = dataclasses.asdict(profile.load)
    cells = profile.select({axis: set(values) for axis, values in info["only"].items()})
    ids = {c.id for c in shard_cells(cells, profile, shard)}

    def relabel(data):
        if label is not None:
            data["environment"]["host_label"] = label

    return copy_run(src, dest, {"shard": shard.to_dict(), "load": load},
                    keep=lambda d: CellRecord.from_dict(d).cell_id in ids, edit=relabel)


def csv_rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))


def test_two_hosts_side_by_side_never_mixed(tmp_path):
    out = tmp_path / "merged"
    merged, paths = merge([EPYC, H200], out)
    assert not merged.missing and [p.name for p in paths] == ["RESULTS.md", "results.csv", "results.json",
                                                                        "results.html"]
    records = list(read_records(out / "results.json"))
    # One record per cell per host, each made of that host's launches only (2 each for an OK cell).
    assert sorted((r.environment.host_label, r.cell_id) for r in records) == sorted(
        (label, r.cell_id) for label in ("ci-epyc-2", "gpu-h200") for r in records if r.environment.host_label == label)
    assert len(records) == 8 and {r.launches for r in records if r.verdict is Verdict.OK} == {2}
    # Each host's ratios are to its own control: the two hosts' lazy cells are 0.49x and 0.73x of theirs.
    rows = {(row["host"], row["strategy"], row["concurrency"]): row for row in csv_rows(out)}
    for host in ("ci-epyc-2", "gpu-h200"):
        lazy, control = rows[host, "lazy", "32"], rows[host, "control", "32"]
        assert float(lazy["ratio_to_control"]) == pytest.approx(float(lazy["rps"]) / float(control["rps"]), rel=1e-6)
    assert float(rows["gpu-h200", "lazy", "32"]["ratio_to_control"]) == pytest.approx(
        1.5 * float(rows["ci-epyc-2", "lazy", "32"]["ratio_to_control"]), rel=1e-3)
    text = (out / "RESULTS.md").read_text()
    assert text.startswith("# forkwise results: profile default, 2 hosts")
    epyc, h200 = text.index("## Host ci-epyc-2 (AMD EPYC, 2 cores"), text.index("## Host gpu-h200 (Intel(R) Xeon")
    assert text.index("## Hosts") < text.index("## Verdicts by host") < epyc < h200
    assert "| cell | ci-epyc-2 | gpu-h200 | hosts agree |" in text
    assert "### Throughput and latency per cell" in text[epyc:h200] and "### Throughput" in text[h200:]
    control_c32 = {h: f"{float(rows[h, 'control', '32']['rps']):,.1f}" for h in ("ci-epyc-2", "gpu-h200")}
    assert control_c32["ci-epyc-2"] in text[epyc:h200] and control_c32["ci-epyc-2"] not in text[h200:]
    assert control_c32["gpu-h200"] in text[h200:] and control_c32["gpu-h200"] not in text[epyc:h200]


def test_each_host_folder_is_a_run_folder(tmp_path):
    out = tmp_path / "merged"
    merge([EPYC, H200], out)
    info = json.loads((out / "run.json").read_text())
    assert [h["folder"] for h in info["hosts"]] == ["hosts/ci-epyc-2", "hosts/gpu-h200"]
    host = out / "hosts" / "gpu-h200"
    assert len(list(read_records(host / "records.jsonl"))) == 7  # every launch, as recorded
    assert json.loads((host / "run.json").read_text())["host"]["gpu_name"] == "NVIDIA H200"
    assert [p.name for p in report_dir(host)][0] == "RESULTS.md"  # `forkwise report` on it: a normal report
    assert (host / "RESULTS.md").read_text().startswith("# forkwise results: profile default\n")
    # `forkwise report` on the merged folder renders the merged report again.
    before = (out / "results.csv").read_text()
    assert main(["report", str(out)]) == 0
    assert (out / "results.csv").read_text() == before


def test_a_verdict_that_differs_between_hosts_is_shown_so(tmp_path):
    crash = copy_run(H200, tmp_path / "h200",
                     edit=lambda d: d.update(verdict="CRASH") if d["strategy"] == "preload" else None)
    only_lazy = copy_run(EPYC, tmp_path / "epyc", keep=lambda d: d["strategy"] != "child-process")
    out = tmp_path / "merged"
    merge([only_lazy, crash], out)
    rows = {row[0]: row[1:] for row in side_by_side(read_hosts(out)[1]).rows}
    assert rows["preload/gunicorn-sync/w2/default/cpu/steady"] == ("HANG", "CRASH", "differs")
    assert rows["child-process/gunicorn-sync/w2/default/cpu/steady"] == ("-", "OK", "one host only")
    assert rows["lazy/gunicorn-sync/w2/default/cpu/steady"] == ("OK", "OK", "same")


def test_shards_of_one_host_merge_into_the_whole_run(tmp_path):
    whole = tmp_path / "whole"
    merge([shard_of(EPYC, tmp_path / "all", Shard(1, 1))], whole)
    parts = [shard_of(EPYC, tmp_path / f"s{k}", Shard(k, 2)) for k in (1, 2)]
    assert all(list(read_records(p / "records.jsonl")) for p in parts)
    out = tmp_path / "merged"
    merge(parts, out)
    def by_cell(rows):
        return sorted(rows, key=lambda row: (row["cell_id"], row["concurrency"]))

    assert by_cell(csv_rows(out)) == by_cell(csv_rows(whole))  # the same cells, verdicts and numbers
    text = (out / "RESULTS.md").read_text()
    assert text.startswith("# forkwise results: profile default, 1 host") and text.count("## Host ") == 1


def test_a_missing_shard_is_refused_or_named_loudly(tmp_path, capsys):
    first = shard_of(EPYC, tmp_path / "s1", Shard(1, 2))
    absent = sorted(c.id for c in shard_cells(
        load_profile("default").select({"server": {"gunicorn-sync"},
                                        "strategy": {"control", "lazy", "preload", "child-process"}}),
        load_profile("default"), Shard(2, 2)))
    with pytest.raises(MergeError, match="missing shard 2/2 of profile 'default'.* on host 'ci-epyc-2'") as exc:
        merge([first], tmp_path / "refused")
    assert all(cell in str(exc.value) for cell in absent) and "--allow-missing" in str(exc.value)
    assert not (tmp_path / "refused").exists()
    assert main(["merge", str(first), "--out", str(tmp_path / "loud"), "--allow-missing"]) == 0
    assert "forkwise: MISSING shard 2/2" in capsys.readouterr().err
    text = (tmp_path / "loud" / "RESULTS.md").read_text()
    assert "**MISSING SHARD:** shard 2/2" in text and all(cell in text for cell in absent)
    assert sorted(json.loads((tmp_path / "loud" / "run.json").read_text())["missing_shards"][0]["cells"]) == absent


def test_shards_under_two_host_labels_say_what_to_set(tmp_path):
    parts = [shard_of(EPYC, tmp_path / "s1", Shard(1, 2), label="runner-a"),
             shard_of(EPYC, tmp_path / "s2", Shard(2, 2), label="runner-b")]
    with pytest.raises(MergeError, match="host 'runner-b' ran it: the shards of one run need one host label"):
        merge(parts, tmp_path / "out")


def _refusal(tmp_path, **folders) -> str:
    with pytest.raises(MergeError) as exc:
        merge(list(folders.values()), tmp_path / "out")
    return str(exc.value)


def test_refuses_different_profiles_and_plans(tmp_path):
    other = copy_run(H200, tmp_path / "quick", {"profile": "quick"})
    refusal = _refusal(tmp_path, a=EPYC, b=other)
    assert "ran profile 'quick'" in refusal and "one profile" in refusal
    load = json.loads((H200 / "run.json").read_text())["load"] | {"repeats": 3}
    longer = copy_run(H200, tmp_path / "repeats", {"load": load})
    assert "different load" in _refusal(tmp_path, a=EPYC, b=longer)


def test_refuses_other_schema_versions(tmp_path):
    newer = copy_run(H200, tmp_path / "v2", edit=lambda d: d.update(schema_version=2))
    message = _refusal(tmp_path, a=EPYC, b=newer)
    assert "schema version" in message
    assert f"{newer}: schema version 2" in message and f"{EPYC}: schema version 1" in message


def test_refuses_a_cell_measured_twice_on_one_host(tmp_path):
    # Another --only on the same host that also ran lazy: lazy measured twice, in two folders.
    again = copy_run(EPYC, tmp_path / "again", {"only": {"strategy": ["lazy"]}},
                     keep=lambda d: d["strategy"] == "lazy")
    message = _refusal(tmp_path, a=EPYC, b=again)
    assert "cell lazy/gunicorn-sync/w2/default/cpu/steady was measured twice on host 'ci-epyc-2'" in message


def test_refuses_a_shard_given_twice(tmp_path):
    copy = copy_run(EPYC, tmp_path / "copy")
    assert "shard 1/1 of host 'ci-epyc-2' is given twice" in _refusal(tmp_path, a=EPYC, b=copy)


def test_refuses_what_is_no_run_folder(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "no run.json" in _refusal(tmp_path, a=EPYC, b=bare)
    merged = tmp_path / "merged"
    merge([EPYC], merged)
    assert "is the output of `forkwise merge`" in _refusal(tmp_path, a=merged)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert "is not empty" in _refusal(tmp_path, a=EPYC)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_refusal_is_one_error_line(tmp_path, capsys):
    shutil.copytree(EPYC, tmp_path / "copy")
    assert main(["merge", str(EPYC), str(tmp_path / "copy"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: shard 1/1 of host 'ci-epyc-2' is given twice") and err.count("\n") == 1
