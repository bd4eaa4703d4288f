"""What the model server did, in the record: its stats (forkwise.modelserver.stats), the channel that
hands them to the cell (a JSON file per process next to the socket), the record's ModelServerStats,
their combination over launches and the report's Model server section."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from forkwise.matrix.analysis.launches import combine
from forkwise.matrix.publish.document import Heading, Table
from forkwise.matrix.publish.model_server_report import histogram_text, model_server_section
from forkwise.matrix.publish.report import write_report
from forkwise.matrix.records.types import CellRecord, ModelServerStats, Verdict
from forkwise.matrix.run.model_server import as_record, model_server_stats
from forkwise.modelserver.stats import (
    Stats,
    StatsWriter,
    read_stats,
    size_bucket,
    stats_path,
    wait_bucket,
    wait_bucket_ceiling_s,
)
from forkwise.strategies import registry
from test_host_speed import run_cell
from test_records import make_record
from test_report import RUN_INFO, md_tables, read_md, run_records, section


def test_call_sizes_fall_in_power_of_two_buckets():
    assert [size_bucket(n) for n in (1, 2, 3, 4, 7, 8, 15, 16)] == [0, 1, 1, 2, 2, 3, 3, 4]
    stats = Stats()
    for rows in (1, 1, 3, 5, 8):
        stats.called(rows, requests=1)
    assert stats.batch_sizes == [2, 1, 1, 1] and sum(stats.batch_sizes) == stats.batches == 5
    assert stats.rows == 18 and stats.largest_batch == 8
    assert histogram_text(stats.batch_sizes) == "1:2 2-3:1 4-7:1 8-15:1"
    assert histogram_text([0, 0, 3]) == "4-7:3"


def test_a_wait_bucket_holds_the_wait_below_its_ceiling_within_a_fifth():
    for seconds in (2e-6, 1e-4, 0.0123, 0.5, 7.0):
        ceiling = wait_bucket_ceiling_s(wait_bucket(seconds))
        assert seconds <= ceiling * (1 + 1e-9) < seconds * 1.2
    assert wait_bucket(0.0) == 0


def test_queue_wait_percentiles_and_mean():
    stats = Stats()
    assert stats.wait_percentile_s(50) is None
    stats.waited([0.001] * 98 + [0.2, 0.2])
    assert stats.waited_requests == 100
    assert 0.001 <= stats.wait_percentile_s(50) < 0.0012
    assert 0.001 <= stats.wait_percentile_s(98) < 0.0012
    assert 0.2 <= stats.wait_percentile_s(99) < 0.24
    record = as_record(stats, processes=1)
    assert record.queue_wait_mean_ms == pytest.approx((98 * 1.0 + 2 * 200.0) / 100)
    assert record.queue_wait_p99_ms == pytest.approx(stats.wait_percentile_s(99) * 1e3, abs=1e-3)


def test_counting_from_many_threads_loses_nothing():
    stats = Stats()

    def serve() -> None:
        for _ in range(2000):
            stats.called(2, requests=2)
            stats.waited([0.001, 0.001])
            stats.padded(1)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.batches == 16000 and stats.rows == stats.requests == 32000 and stats.padded_rows == 16000
    assert stats.batch_sizes == [0, 16000] and stats.waited_requests == 32000


def test_every_process_file_is_read_and_added_up(tmp_path):
    first, restarted = Stats(), Stats()
    first.called(1, 1)
    first.waited([0.001])
    restarted.called(6, 3)
    restarted.ran_direct()
    restarted.expired_requests(2)
    restarted.waited([0.002, 0.003, 0.004, 9.0, 9.0])
    StatsWriter(first, stats_path(tmp_path, 101)).write_now()
    StatsWriter(restarted, stats_path(tmp_path, 202)).write_now()
    parts = read_stats(tmp_path)
    assert [p.to_dict() for p in parts] == [first.to_dict(), restarted.to_dict()]
    assert not list(tmp_path.glob(".*"))  # no temporary file is left behind
    total = Stats.merged(parts)
    assert (total.batches, total.rows, total.requests, total.direct, total.expired) == (2, 7, 4, 1, 2)
    assert total.batch_sizes == [1, 0, 1] and total.largest_batch == 6 and total.waited_requests == 6


def test_the_writer_rewrites_the_file_as_the_stats_change(tmp_path):
    stats, path = Stats(), stats_path(tmp_path, 7)
    writer = StatsWriter(stats, path)
    writer.write_now()
    assert json.loads(path.read_text())["batches"] == 0
    stats.called(4, 2)
    writer.write_now()
    assert json.loads(path.read_text())["batches"] == 1


def test_the_cell_reads_the_stats_only_of_a_strategy_with_a_model_server(tmp_path):
    settings = dataclasses.make_dataclass("Settings", ["run_dir"])(tmp_path)
    batched = registry.get("child-process-batched")
    assert model_server_stats(batched, settings) is None  # no model server ever wrote: nothing to say
    stats = Stats()
    stats.called(3, 2)
    directory = batched.model_server_dir(settings)
    directory.mkdir()
    StatsWriter(stats, stats_path(directory, 1)).write_now()
    found = model_server_stats(batched, settings)
    assert found is not None and found.calls == 1 and found.rows_per_call == 3.0 and found.processes == 1
    assert registry.get("lazy").model_server_dir(settings) is None


def served(calls: int, rows: int, p99_ms: float) -> ModelServerStats:
    return ModelServerStats(calls=calls, rows=rows, requests=rows, direct=0, padding_rows=1, expired=0,
                            largest_call=rows, calls_by_rows=(calls,), queue_wait_mean_ms=1.0,
                            queue_wait_p50_ms=1.0, queue_wait_p99_ms=p99_ms, processes=1)


def test_launches_add_up_their_model_server_stats():
    one = make_record(model_server=served(2, 2, 5.0))
    two = make_record(model_server=dataclasses.replace(served(1, 4, 9.0), calls_by_rows=(0, 0, 1)))
    combined = combine([one, two]).model_server
    assert combined is not None
    assert (combined.calls, combined.rows, combined.padding_rows, combined.processes) == (3, 6, 2, 2)
    assert combined.calls_by_rows == (2, 0, 1) and combined.largest_call == 4
    assert combined.queue_wait_p99_ms == 9.0  # the worst launch's: percentiles do not add up


def test_the_report_shows_a_model_server_table_only_for_cells_with_one():
    with_server = make_record(model_server=served(4, 10, 3.0))
    without = make_record()
    assert model_server_section([without]) == []
    blocks = model_server_section([with_server, without])
    assert Heading("Model server") in blocks
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert len(table.rows) == 1
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert row["calls"] == "4" and row["rows per call"] == "2.5" and row["calls by rows"] == "1:4"
    assert row["queue wait p99 ms"] == "3.00"


@pytest.mark.integration
def test_a_batched_cell_records_what_its_model_server_did(home, tiny_spec_path):
    record = run_cell(home, "--strategy", "child-process-batched", "--server", "gunicorn-gthread", "--model", "tiny",
                      "--load", "8", "--warmup", "0", "--duration", "1", "--intervals", "1")
    assert record.verdict is Verdict.OK, record.evidence
    served = record.model_server
    assert served is not None and served.processes == 1
    assert sum(served.calls_by_rows) == served.calls > 0 and served.direct <= served.calls
    assert served.rows >= served.requests >= served.calls and served.expired == 0
    # Every row a client got an answer for was computed by the model server (warm-ups add more).
    assert served.rows >= record.rows_expected + sum(level.rows_found for level in record.load)
    assert 1 <= served.largest_call <= record.settings["max_batch"]
    assert served.queue_wait_p50_ms is not None and served.queue_wait_p50_ms <= served.queue_wait_p99_ms


def test_a_record_with_model_server_stats_round_trips_and_one_without_keeps_none():
    record = make_record(model_server=served(3, 7, 2.0))
    assert CellRecord.from_dict(json.loads(record.to_json())) == record
    assert CellRecord.from_dict(json.loads(make_record().to_json())).model_server is None


def test_results_md_has_the_model_server_table_after_the_throughput_table(tmp_path):
    records = [dataclasses.replace(r, model_server=served(5, 20, 4.0)) if r.strategy == "child-process-batched"
               else r for r in run_records()]
    write_report(records, tmp_path, "test", RUN_INFO)
    md = read_md(tmp_path)
    assert md.index("## Throughput and latency per cell") < md.index("## Model server") < md.index("## Memory")
    (table,) = md_tables(section(md, "Model server"))
    assert table[0][:3] == ["cell", "top rps", "calls"]
    assert [row[0].split("/")[0] for row in table[1:]] == ["child-process-batched"]
    assert table[1][2:5] == ["5", "20", "4.0"]
