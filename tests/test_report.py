"""The published report and the run comparison, on synthetic records (no servers, no TensorFlow)."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest

from forkwise.matrix.compare import Comparison, compare, load_run, render_comparison
from forkwise.matrix.records import (
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
    append_record,
    read_records,
)
from forkwise.matrix.report import COLUMNS, REPORT_FILES, write_report

SERVERS = ("gunicorn-sync", "uwsgi")
CONCURRENCY = (1, 8)
HANG_TAIL = "\n".join(
    [f"[CRITICAL] WORKER TIMEOUT (pid:{100 + i})" for i in range(12)] + ["<script>alert('x')</script>"]
)
RUN_INFO = {
    "profile": "test",
    "started_at": "2026-11-26T10:00:00Z",
    "duration_s": 754.0,
    "driver": "builtin",
    "command": "forkwise run --profile test",
}

# rps at concurrency 1 and 8, per (strategy, server); stdevs are small
RPS = {
    ("control", "gunicorn-sync"): (400.0, 1000.0),
    ("control", "uwsgi"): (380.0, 900.0),
    ("lazy", "gunicorn-sync"): (300.0, 830.0),
    ("lazy", "uwsgi"): (280.0, 700.0),
    ("import-in-route", "gunicorn-sync"): (290.0, 760.0),
    ("import-in-route", "uwsgi"): (270.0, 690.0),
    ("child-process-batched", "gunicorn-sync"): (250.0, 870.0),
}
P99 = {  # ms at concurrency 8
    ("control", "gunicorn-sync"): 4.0,
    ("control", "uwsgi"): 4.5,
    ("lazy", "gunicorn-sync"): 9.0,
    ("lazy", "uwsgi"): 12.0,
    ("import-in-route", "gunicorn-sync"): 7.5,
    ("import-in-route", "uwsgi"): 11.0,
    ("child-process-batched", "gunicorn-sync"): 15.0,
}
PSS = {
    ("control", "gunicorn-sync"): 150.0,
    ("control", "uwsgi"): 140.0,
    ("lazy", "gunicorn-sync"): 1300.0,
    ("lazy", "uwsgi"): 1250.0,
    ("import-in-route", "gunicorn-sync"): 1280.0,
    ("import-in-route", "uwsgi"): 1270.0,
    ("child-process-batched", "gunicorn-sync"): 700.0,
}


# --- factories -----------------------------------------------------------------------------


def environment() -> Environment:
    return Environment(
        date="2026-11-26T10:00:00Z",
        git_commit="4936e01",
        cpu_model="Test CPU @ 3.0GHz",
        cores=2,
        memory_gb=7.8,
        python="3.11.9",
        platform="Linux-x86_64",
        packages={"tensorflow-cpu": "2.21.0", "gunicorn": "27.0.1", "pyuwsgi": "2.0.30"},
    )


def level(concurrency: int, rps: float, stdev: float = 5.0, p99_ms: float = 10.0, rows_lost: int = 0) -> LoadLevel:
    requests = int(rps * 10)
    return LoadLevel(
        concurrency=concurrency,
        duration_s=10.0,
        requests=requests,
        rps=rps,
        rps_stdev=stdev,
        rps_samples=(rps - stdev, rps, rps + stdev),
        latency=Latency(p50_ms=p99_ms / 3, p90_ms=p99_ms / 1.5, p99_ms=p99_ms, max_ms=p99_ms * 2, mean_ms=p99_ms / 2.5),
        errors=ErrorCounts(),
        rows_expected=requests,
        rows_found=requests - rows_lost,
        unacknowledged=0,
        sampled=50,
        sampled_wrong=0,
        driver="builtin",
        driver_cpu_s=3.0,
        server_cpu_s=15.0,
    )


def memory(pss_total: float, model_server: bool = False) -> Memory:
    roles = ["master", "worker", "worker"] + (["model-server"] if model_server else [])
    share = pss_total / len(roles)
    return Memory.of(
        ProcessMemory(role=role, pid=1000 + i, rss_mb=share * 1.5, uss_mb=share * 0.8, pss_mb=share, cpu_s=1.0)
        for i, role in enumerate(roles)
    )


def record(strategy: str, server: str, verdict: Verdict = Verdict.OK, **overrides) -> CellRecord:
    fields = dict(
        strategy=strategy,
        server=server,
        workers=2,
        threads=1,
        model="mlp-small",
        device="cpu",
        verdict=verdict,
        cold_start_s=2.5,
        warm_all_s=3.1,
        requests=40,
        ok=40 if verdict is Verdict.OK else 0,
        errors=ErrorCounts(),
        rows_expected=40,
        rows_found=40,
        worker_pids=(2001, 2002),
        evidence=Evidence(),
        environment=environment(),
        started_at="2026-11-26T10:00:00Z",
        duration_s=60.0,
        settings={"timeout_s": 30},
    )
    fields.update(overrides)
    return CellRecord(**fields)


def ok_record(strategy: str, server: str) -> CellRecord:
    low, high = RPS[(strategy, server)]
    return record(
        strategy,
        server,
        load=(level(1, low, p99_ms=2.0), level(8, high, p99_ms=P99[(strategy, server)])),
        memory=memory(PSS[(strategy, server)], model_server=strategy.startswith("child-process")),
    )


def hang_record() -> CellRecord:
    return record(
        "preload",
        "gunicorn-sync",
        Verdict.HANG,
        cold_start_s=None,
        warm_all_s=None,
        errors=ErrorCounts(timeout=40),
        rows_found=0,
        evidence=Evidence(
            findings=("40 of 40 requests timed out after 30 s", "gunicorn killed 12 workers with WORKER TIMEOUT"),
            timings_s={"first_timeout_s": 30.0},
            log_tail=HANG_TAIL,
        ),
        memory=memory(1400.0),
    )


def crash_record() -> CellRecord:
    return record(
        "preload",
        "uwsgi",
        Verdict.CRASH,
        cold_start_s=None,
        warm_all_s=None,
        requests=5,
        errors=ErrorCounts(connect=5),
        rows_expected=0,
        rows_found=0,
        worker_pids=(),
        evidence=Evidence(findings=("workers respawned 9 times",), log_tail="DAMN ! worker 1 (pid: 77) died :("),
    )


def run_records() -> list[CellRecord]:
    return [ok_record(s, v) for (s, v) in RPS] + [hang_record(), crash_record()]


@pytest.fixture
def records() -> list[CellRecord]:
    return run_records()


@pytest.fixture
def out(tmp_path: Path, records) -> Path:
    write_report(records, tmp_path, "test", RUN_INFO)
    return tmp_path


# --- helpers to read the Markdown back -----------------------------------------------------


def section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    nxt = md.find("\n## ", start + 1)
    return md[start:] if nxt < 0 else md[start:nxt]


def md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in text, as rows of cells (header first, rule dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", " "} and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def read_md(out: Path) -> str:
    return (out / "RESULTS.md").read_text(encoding="utf-8")


# --- the four files ------------------------------------------------------------------------


def test_writes_the_four_files(tmp_path, records):
    paths = write_report(records, tmp_path / "run", "test", RUN_INFO)
    assert [p.name for p in paths] == list(REPORT_FILES)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_json_round_trips(out, records):
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["profile"] == "test"
    assert doc["run"] == RUN_INFO
    assert doc["environment"] == dataclasses.asdict(environment())
    assert list(read_records(out / "results.json")) == records


def test_json_records_match_the_schema(out):
    jsonschema = pytest.importorskip("jsonschema")
    from forkwise.matrix.records import json_schema

    schema = json_schema()
    for item in json.loads((out / "results.json").read_text())["records"]:
        jsonschema.validate(item, schema)


def test_csv_header_rows_and_numbers(out, records):
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh))
    assert header == [c.key for c in COLUMNS]
    for key in ("cell_id", "verdict", "concurrency", "rps", "rps_stdev", "ratio_to_control", "p99_ms", "total_pss_mb"):
        assert key in header
    assert len(rows) == sum(max(1, len(r.load)) for r in records)
    numeric = ("workers", "concurrency", "rps", "rps_stdev", "ratio_to_control", "p50_ms", "p99_ms",
               "rows_lost", "cold_start_s", "total_pss_mb", "verify_requests")
    for row in rows:
        for key in numeric:
            if row[key] != "":
                float(row[key])  # plain numbers: no units, no thousands separators
    lazy8 = next(r for r in rows if r["cell_id"].startswith("lazy/gunicorn-sync/") and r["concurrency"] == "8")
    assert float(lazy8["rps"]) == 830.0
    assert float(lazy8["ratio_to_control"]) == pytest.approx(830.0 / 1000.0)
    crash = [r for r in rows if r["verdict"] == "CRASH"]
    assert len(crash) == 1 and crash[0]["concurrency"] == "" and crash[0]["rps"] == ""


# --- RESULTS.md ----------------------------------------------------------------------------


def test_md_header(out):
    head = read_md(out).split("## Verdict matrix")[0]
    for text in ("test", "Test CPU @ 3.0GHz", "2 cores", "7.8 GB", "tensorflow-cpu 2.21.0", "12 min 34 s", "builtin"):
        assert text in head


def test_md_verdict_matrix(out):
    (matrix,) = md_tables(section(read_md(out), "Verdict matrix"))
    header, body = matrix[0], {row[0]: row for row in matrix[1:]}
    assert header == ["strategy", "gunicorn-sync", "uwsgi"]
    assert body["preload"][header.index("gunicorn-sync")] == "HANG"
    assert body["preload"][header.index("uwsgi")] == "CRASH"
    assert body["lazy"][1:] == ["OK", "OK"]
    assert body["child-process-batched"][header.index("uwsgi")] == "-"  # not run there


def test_md_one_matrix_per_combination(tmp_path, records):
    more = records + [dataclasses.replace(ok_record("lazy", "uwsgi"), workers=4)]
    write_report(more, tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "Verdict matrix")
    assert len(md_tables(text)) == 2
    assert "### 4 workers" in text


def test_md_ratio_to_control(out):
    (table,) = md_tables(section(read_md(out), "Throughput and latency per cell"))
    header = table[0]
    row = next(r for r in table[1:] if r[0].startswith("lazy/gunicorn-sync/") and r[1] == "8")
    expected = RPS[("lazy", "gunicorn-sync")][1] / RPS[("control", "gunicorn-sync")][1]
    assert row[header.index("vs control")] == f"{expected:.2f}x"
    assert row[header.index("rps ± stdev")] == "830.0 ± 5.0"
    assert not any(r[0].startswith("preload/") for r in table[1:])  # only OK cells


def test_md_memory_section(out):
    (table,) = md_tables(section(read_md(out), "Memory and cold start"))
    header = table[0]
    row = next(r for r in table[1:] if r[0].startswith("child-process-batched/"))
    assert row[header.index("PSS MB")] == "700.0"
    assert row[header.index("processes")] == "1 master + 2 worker + 1 model-server"
    assert row[header.index("cold start s")] == "2.50"


def test_md_failing_cells_show_log_tail(out):
    text = section(read_md(out), "Failing cells")
    assert "preload/gunicorn-sync/w2/mlp-small/cpu/steady: HANG" in text
    assert "40 of 40 requests timed out after 30 s" in text
    assert "WORKER TIMEOUT (pid:111)" in text  # in the last ten lines
    assert "WORKER TIMEOUT (pid:100)" not in text  # trimmed to the tail
    assert "preload/uwsgi/w2/mlp-small/cpu/steady: CRASH" in text
    assert "DAMN ! worker 1" in text
    assert "```text" in text


def test_md_article_cases_report_observed_verdicts(out):
    text = section(read_md(out), "The article's three cases, answered")
    case2 = text[text.index("### Case 2"): text.index("### Case 3")]
    assert "HANG x1" in case2 and "CRASH x1" in case2
    assert "failed under all 2 server settings" in case2
    case1 = text[text.index("### Case 1"): text.index("### Case 2")]
    assert "answered correctly under all 2 server settings (OK x2)" in case1
    assert "was not observed" in case1
    case3 = text[text.index("### Case 3"):]
    assert "not run in this profile" in case3


def test_md_article_sentence_follows_the_data(tmp_path, records):
    healed = [
        dataclasses.replace(r, verdict=Verdict.OK) if r.strategy == "preload" else r for r in records
    ]
    write_report(healed, tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "The article's three cases, answered")
    case2 = text[text.index("### Case 2"): text.index("### Case 3")]
    assert "preload answered correctly under all 2 server settings (OK x2)" in case2
    assert "HANG" not in case2


def test_md_recommendation_names_the_fastest_cell(out, records):
    candidates = [r for r in records if r.verdict.ok and r.strategy != "control" and r.load]
    top = max(candidates, key=lambda r: next(lv.rps for lv in r.load if lv.concurrency == max(CONCURRENCY)))
    fastest_p99 = min(candidates, key=lambda r: next(lv.latency.p99_ms for lv in r.load if lv.concurrency == 8))
    ok_models = [r for r in records if r.verdict.ok and r.strategy != "control"]
    leanest = min(ok_models, key=lambda r: r.memory.total_pss_mb)
    (table,) = md_tables(section(read_md(out), "Recommendation"))
    rows = {row[0]: row for row in table[1:]}
    assert top.cell_id == "child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady"
    assert rows["throughput matters most"][1] == top.cell_id
    assert "870.0" in rows["throughput matters most"][2]
    assert rows["throughput matters most"][3] == "lazy/gunicorn-sync/w2/mlp-small/cpu/steady"  # runner-up
    assert rows["latency matters most"][1] == fastest_p99.cell_id
    assert rows["memory matters most"][1] == leanest.cell_id


def test_md_recommendation_without_load(tmp_path):
    write_report([crash_record(), hang_record()], tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "Recommendation")
    assert "No OK cell other than control has load data" in text


# --- results.html --------------------------------------------------------------------------


def test_html_has_plots_and_escapes_text(out):
    page = (out / "results.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') >= 3
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert '<td class="v-HANG">HANG</td>' in page
    assert "830.0 ± 5.0" in page  # the per-cell table
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # self-contained


# --- compare -------------------------------------------------------------------------------


def with_rps(rec: CellRecord, factor: float, stdev: float) -> CellRecord:
    load = tuple(dataclasses.replace(lv, rps=lv.rps * factor, rps_stdev=stdev) for lv in rec.load)
    return dataclasses.replace(rec, load=load)


def lazy_cell() -> CellRecord:
    return ok_record("lazy", "gunicorn-sync")


def test_compare_identical_runs_is_quiet(records):
    comps = compare(records, run_records())
    assert comps and not any(c.significant for c in comps)
    assert all(c.delta_pct in (0.0, None) for c in comps)
    assert len(comps) == sum(max(1, len(r.load)) for r in records)


def test_compare_large_change_is_significant():
    (c1, c8) = compare([with_rps(lazy_cell(), 1.0, 2.0)], [with_rps(lazy_cell(), 1.5, 2.0)])
    assert c8.concurrency == 8 and c8.significant and c8.delta_pct == pytest.approx(50.0)
    assert c1.significant


def test_compare_small_change_within_noise_is_not_significant():
    (_, c8) = compare([with_rps(lazy_cell(), 1.0, 40.0)], [with_rps(lazy_cell(), 1.03, 40.0)])
    assert not c8.significant and c8.delta_pct == pytest.approx(3.0)
    assert "n.s." in render_comparison([c8])


def test_compare_zero_stdev_uses_five_percent():
    (_, small) = compare([with_rps(lazy_cell(), 1.0, 0.0)], [with_rps(lazy_cell(), 1.04, 0.0)])
    (_, large) = compare([with_rps(lazy_cell(), 1.0, 0.0)], [with_rps(lazy_cell(), 1.06, 0.0)])
    assert not small.significant and large.significant


def test_compare_flags_a_verdict_change():
    a = [lazy_cell(), crash_record()]
    b = [lazy_cell(), dataclasses.replace(crash_record(), verdict=Verdict.OK)]
    changed = [c for c in compare(a, b) if c.cell_id.startswith("preload/")]
    assert changed == [
        Comparison(
            cell_id="preload/uwsgi/w2/mlp-small/cpu/steady",
            concurrency=None,
            rps_a=None,
            rps_b=None,
            delta_pct=None,
            significant=True,
            verdict_a=Verdict.CRASH,
            verdict_b=Verdict.OK,
            note="verdict changed: CRASH -> OK",
            verdict_changed=True,
        )
    ]
    table = render_comparison(compare(a, b))
    assert re.search(r"\| preload/uwsgi/\S+ \| - \| - \| - \| - \| - \| - \| - \| yes \| CRASH -> OK \|", table)
    assert table.startswith("0 of 2 measured levels")


def test_compare_cells_in_one_run_only():
    comps = compare([lazy_cell()], [crash_record()])
    notes = {c.cell_id.split("/")[0]: c.note for c in comps}
    assert notes == {"lazy": "only in run a", "preload": "only in run b"}
    summary = render_comparison(comps).splitlines()[0]
    assert "0 cells changed verdict; 2 cells ran in one run only." in summary  # missing is not a change


def test_load_run_prefers_results_json(tmp_path, records):
    jsonl_only = tmp_path / "partial"
    jsonl_only.mkdir()
    for rec in records[:2]:
        append_record(jsonl_only / "records.jsonl", rec)
    assert load_run(jsonl_only) == records[:2]
    write_report(records, jsonl_only, "test", RUN_INFO)
    assert load_run(jsonl_only) == records


def test_load_run_missing(tmp_path):
    from forkwise.errors import RecordError

    with pytest.raises(RecordError):
        load_run(tmp_path)


# --- performance goals, judged from records ----------------------------------------------------


def _goal_records(batched_rps: float, lazy_rps: float, pss: dict) -> list[CellRecord]:
    recs = []
    for strategy, rps in (("control", 2000.0), ("lazy", lazy_rps), ("child-process-batched", batched_rps)):
        for workers in (2, 4):
            recs.append(record(strategy, "gunicorn-gthread", workers=workers, model="default",
                               load=(level(32, rps),), memory=memory(pss[(strategy, workers)])))
            recs.append(record(strategy, "gunicorn-gthread", workers=workers, model="large",
                               load=(level(32, rps / 4 if strategy == "lazy" else rps / 2),)))
    return recs


def test_goals_are_judged_from_the_numbers():
    from forkwise.matrix.goals import evaluate

    pss = {("control", 2): 100, ("control", 4): 150, ("lazy", 2): 1300, ("lazy", 4): 2500,
           ("child-process-batched", 2): 700, ("child-process-batched", 4): 800}
    ceiling, batching, mem, fast = evaluate(_goal_records(1700.0, 900.0, pss), {})
    assert ceiling.met and ceiling.ratio == pytest.approx(0.85)  # batched 1700 / control 2000
    assert batching.met and batching.ratio == pytest.approx((1700 / 2) / (900 / 4), rel=1e-2)
    assert mem.met and "gap 600" in mem.measured and "gap 1700" in mem.measured
    assert fast.met is None  # no benchmark results: said, not guessed

    slow = evaluate(_goal_records(1000.0, 900.0, pss), {"test_locked_singleton_overhead_vs_global": {"overhead_ns": 5.0},
                    "test_model_server_round_trip_1x256": {"round_trip_us": 600.0, "model_call_us": 450.0}})
    assert slow[0].met is False and slow[0].ratio == pytest.approx(0.5)
    assert slow[3].met is False and "model call 450 us" in slow[3].measured


def _machine(factor: float, lazy_rps: float = 500.0) -> list[CellRecord]:
    """Six cells on one machine: five whose rps scale with the machine, and lazy."""
    cells = [record(s, "uwsgi", load=(level(8, 1000.0 * factor, stdev=10.0 * factor),))
             for s in ("control", "import-in-route", "locked-singleton", "child-process", "child-process-batched")]
    return cells + [record("lazy", "uwsgi", load=(level(8, lazy_rps, stdev=5.0),))]


def test_compare_factors_out_a_whole_machine_shift():
    from forkwise.matrix.compare import judgement_for

    # The whole machine ran 20% faster in run b: every cell alike. Not a difference of any one cell.
    a, b = _machine(1.0), _machine(1.2, lazy_rps=600.0)
    judgement = judgement_for(a, b)
    assert judgement.shift == pytest.approx(1.2) and judgement.shift_levels == 6
    rows = compare(a, b, judgement)
    assert not any(c.significant for c in rows)
    assert all(c.delta_pct == pytest.approx(20.0) and c.adjusted_delta_pct == pytest.approx(0.0) for c in rows)
    assert "ran at 1.200x run a" in render_comparison(rows, judgement)
    # lazy fell while the machine sped up: that is lazy's own.
    b[-1] = record("lazy", "uwsgi", load=(level(8, 400.0, stdev=5.0),))
    lazy = {c.cell_id.split("/")[0]: c for c in compare(a, b)}["lazy"]
    assert lazy.significant and lazy.adjusted_delta_pct == pytest.approx(400 / 1.2 / 500 * 100 - 100)


def test_compare_of_a_few_cells_is_judged_raw():
    from forkwise.matrix.compare import judgement_for

    a, b = _machine(1.0)[:2], _machine(1.2)[:2]
    judgement = judgement_for(a, b)
    assert judgement.shift is None
    assert all(c.significant for c in compare(a, b, judgement))
    assert "judged raw" in render_comparison(compare(a, b, judgement), judgement)


def test_missed_goals_show_the_profiles_of_their_cells(tmp_path):
    from forkwise.matrix.goals import profile_label

    pss = {("control", 2): 100, ("control", 4): 150, ("lazy", 2): 1300, ("lazy", 4): 2500,
           ("child-process-batched", 2): 700, ("child-process-batched", 4): 800}
    recs = _goal_records(1000.0, 900.0, pss)  # goal 1 missed: 1000 / 2000
    best = next(r for r in recs if r.strategy == "child-process-batched" and r.model == "default" and r.workers == 2)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / f"{profile_label(best)}.worker-42.txt").write_text(
        "10 samples of busy threads\n\ninclusive  function\n 100.0%  main\n   60.0%  Predictor.__call__ (r.py:1)\n"
        "   20.0%  Database.record (d.py:1)\n\nself       function\n    70.0%  quick_execute (x.py:1)\n")
    write_report(recs, tmp_path / "run", "test", RUN_INFO)
    text = (tmp_path / "run" / "RESULTS.md").read_text()
    assert "### Goal 1 missed: where the time goes" in text
    assert "worker-42: 10 samples" in text and "    70.0%  quick_execute (x.py:1)" in text
    assert "model call 60%, database write 20% of the busy samples" in text
