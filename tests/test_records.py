"""Records: typed, immutable, validated on the way in, schema derived from the same classes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from forkwise.errors import RecordError
from forkwise.matrix.records.jsonl import append_record, read_records
from forkwise.matrix.records.record_schema import json_schema
from forkwise.matrix.records.types import (
    SCHEMA_VERSION,
    CellRecord,
    Environment,
    ErrorCounts,
    Evidence,
    Latency,
    LoadLevel,
    Memory,
    ProcessMemory,
    Verdict,
)


def make_record(**overrides) -> CellRecord:
    level = LoadLevel(
        concurrency=8, duration_s=2.0, requests=2000, rps=1000.0, rps_stdev=12.5, rps_samples=(990.0, 1010.0),
        latency=Latency(p50_ms=7.0, p90_ms=9.0, p99_ms=12.0, max_ms=30.0, mean_ms=7.5), errors=ErrorCounts(),
        rows_expected=2100, rows_found=2100, unacknowledged=0, sampled=40, sampled_wrong=0, driver="builtin",
        driver_cpu_s=0.9, server_cpu_s=3.1,
    )
    base = dict(
        strategy="lazy", server="uwsgi", workers=2, threads=1, model="default", device="cpu", verdict=Verdict.OK,
        cold_start_s=2.5, warm_all_s=2.6, requests=33, ok=33, errors=ErrorCounts(), rows_expected=64, rows_found=64,
        worker_pids=(10, 11), evidence=Evidence(timings_s={"alive_s": 0.4}),
        environment=Environment(date="2026-11-26T00:00:00+00:00", git_commit="abc", cpu_model="cpu", cores=2,
                                memory_gb=23.5, python="3.11.7", platform="linux", packages={"keras": "3"}),
        started_at="2026-11-26T00:00:00+00:00", duration_s=9.5, load=(level,),
        memory=Memory.of([ProcessMemory("master", 1, 100.0, 50.0, 60.0, 1.0),
                          ProcessMemory("worker", 10, 600.0, 400.0, 450.0, 5.0)]),
    )
    return CellRecord.of(**{**base, **overrides})


def test_round_trip_keeps_types(tmp_path):
    record = make_record()
    path = tmp_path / "records.jsonl"
    append_record(path, record)
    append_record(path, make_record(verdict=Verdict.HANG, load=(), memory=None))
    back = list(read_records(path))
    assert back[0] == record and back[1].verdict is Verdict.HANG
    assert isinstance(back[0].load[0].rps, float) and back[0].memory.total_pss_mb == 510.0


def test_records_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_record().verdict = Verdict.OK


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(verdict="FINE"), "is not one of"),
        (lambda d: d.update(cold_start_s="1.2s"), "expected a number"),
        (lambda d: d.update(surprise=1), "unknown fields"),
        (lambda d: d.pop("strategy"), "needs axis 'strategy'"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
        (lambda d: d["load"][0]["latency"].update(p99_ms=None), "expected a number"),
    ],
)
def test_invalid_records_are_refused_with_the_field_named(mutate, message):
    data = make_record().to_dict()
    mutate(data)
    with pytest.raises(RecordError, match=message):
        CellRecord.from_dict(data)


def test_schema_accepts_a_record_and_rejects_a_string_number():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    data = make_record().to_dict()
    jsonschema.validate(data, schema)
    data["load"][0]["rps"] = "1000 rps"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(make_record().to_json() + "\n{broken\n")
    with pytest.raises(RecordError, match=":2:"):
        list(read_records(path))


def test_cell_id_and_rows_lost():
    record = make_record()
    assert record.cell_id == "lazy/uwsgi/w2/default/cpu/steady"
    assert record.load[0].rows_lost == 0
    assert json.loads(record.to_json())["verdict"] == "OK"


def test_committed_schema_matches_the_records():
    committed = Path(__file__).resolve().parents[1] / "matrix" / "records" / "schema" / "cell-record-v1.json"
    assert json.loads(committed.read_text()) == json_schema(), (
        "run `forkwise schema > matrix/records/schema/cell-record-v1.json` and commit it")
