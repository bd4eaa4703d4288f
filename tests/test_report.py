"""The published report and the run comparison, on synthetic records (no servers, no TensorFlow)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from forkwise.matrix.publish.report import REPORT_FILES, columns, write_report
from forkwise.matrix.records.jsonl import append_record, read_records
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

SERVERS = ("gunicorn-sync", "uwsgi")
CONCURRENCY = (1, 8)
HANG_TAIL = "\n".join(
    [f"[CRITICAL] WORKER TIMEOUT (pid:{100 + i})" for i in range(12)] + ["<script>alert('x')</script>"]
)
RUN_INFO = {
    "profile": "test",
    "started_at": "2026-11-26T10:00:00Z",
    "duration_s": 754.0,
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
    return CellRecord.of(**fields)


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
    from forkwise.matrix.records.record_schema import json_schema

    schema = json_schema()
    for item in json.loads((out / "results.json").read_text())["records"]:
        jsonschema.validate(item, schema)


def test_csv_header_rows_and_numbers(out, records):
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh))
    assert header == [c.key for c in columns()]
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


def test_the_header_names_the_code_that_rendered_it_beside_the_records(out):
    from forkwise import provenance

    head = read_md(out).split("## Verdict matrix")[0]
    commit = provenance.git_commit()
    rendered = next(line for line in head.splitlines() if "rendered by" in line)
    assert "forkwise " in rendered and (commit == "unknown" or commit[:7] in rendered)
    assert "git commit" in head  # the records' own commits, apart from the renderer's


def test_md_verdict_matrix(out):
    (matrix,) = md_tables(section(read_md(out), "Verdict matrix"))
    header, body = matrix[0], {row[0]: row for row in matrix[1:]}
    assert header == ["strategy", "gunicorn-sync", "uwsgi"]
    assert body["preload"][header.index("gunicorn-sync")] == "HANG"
    assert body["preload"][header.index("uwsgi")] == "CRASH"
    assert body["lazy"][1:] == ["OK", "OK"]
    assert body["child-process-batched"][header.index("uwsgi")] == "-"  # not run there


def test_md_one_matrix_per_combination(tmp_path, records):
    more = records + [ok_record("lazy", "uwsgi").with_axes(workers=4)]
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
    assert "not run in the steady scenario in this profile" in case3


def test_md_article_sentence_follows_the_data(tmp_path, records):
    healed = [
        dataclasses.replace(r, verdict=Verdict.OK) if r.strategy == "preload" else r for r in records
    ]
    write_report(healed, tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "The article's three cases, answered")
    case2 = text[text.index("### Case 2"): text.index("### Case 3")]
    assert "preload answered correctly under all 2 server settings (OK x2)" in case2
    assert "HANG" not in case2


def test_md_article_cases_count_only_first_request_evidence(tmp_path, records):
    # Recycling stalls locked-singleton while the new worker loads: a reliability result, not
    # evidence of a race between workers on their first requests (the article's case 3).
    singleton = [record("locked-singleton", server, load=(level(8, 700.0),)) for server in SERVERS]
    recycled = record("locked-singleton", "uwsgi", Verdict.CRASH, scenario="recycle",
                      evidence=Evidence(findings=("throughput did not recover after the event",)))
    write_report(records + singleton + [recycled], tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "The article's three cases, answered")
    case3 = text[text.index("### Case 3"):]
    assert "answered correctly under all 2 server settings (OK x2)" in case3
    assert "was not observed" in case3
    assert "**Not counted:** recycle (CRASH x1)" in case3
    assert "locked-singleton/uwsgi/w2/mlp-small/cpu/recycle" not in md_tables(case3)[0][1:][0]


def test_article_cases_name_strategies_that_exist():
    from forkwise.matrix.analysis.article import article_cases
    from forkwise.strategies import registry

    assert [c.number for c in article_cases()] == [1, 2, 3]
    for case in article_cases():
        for name in (case.strategy, *case.related):
            assert registry.get(name).name == name


def test_md_header_summarises_every_record(tmp_path, records):
    env = environment()
    other = dataclasses.replace(env, git_commit="0123456789abcdef0123456789abcdef01234567+modified",
                                packages={**env.packages, "tensorflow-cpu": "2.20.0"})
    launches = records + [dataclasses.replace(records[0], environment=other)]  # a second launch of one cell
    write_report(launches, tmp_path, "test", RUN_INFO)
    facts = dict(md_tables(read_md(tmp_path).split("## Verdict matrix")[0])[0][1:])
    n = len(records)
    assert facts["git commit"] == f"4936e01 ({n} records), 0123456+modified (1 records)"
    assert f"tensorflow-cpu 2.21.0 ({n} records), 2.20.0 (1 records)" in facts["packages"]
    assert "gunicorn 27.0.1," in facts["packages"]  # the same in every record: once, no count
    assert facts["cells"] == str(n)


def test_md_single_sample_is_not_published_as_zero_spread(tmp_path):
    one = dataclasses.replace(level(8, 900.0), rps_stdev=0.0, rps_samples=(900.0,))
    write_report([record("lazy", "uwsgi", load=(one,))], tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "Throughput and latency per cell")
    assert "900.0 (one sample)" in text and "± 0.0" not in text


def recommended(md: str) -> list[str]:
    """The cells of the recommendation's answer table."""
    (table,) = md_tables(section(md, "Recommendation"))
    return [row[0] for row in table[1:]]


def test_md_recommendation_states_the_question_and_its_default_budgets(out):
    text = section(read_md(out), "Recommendation")
    assert "p99 latency at most 100 ms (set by: default) and no memory budget (set by: default)" in text
    # Every level within 100 ms: each cell at its most throughput (c8); batched leads lazy by 40
    # req/s, 5.7 standard errors of the difference: nothing else is in the set.
    assert recommended(read_md(out)) == ["child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady"]
    assert "1 of 5 cells serving model mlp-small on cpu cannot be told apart" in text
    assert "| 870.0 ± 5.0 | best |" in text


def noisy(rec: CellRecord, stdev: float) -> CellRecord:
    return dataclasses.replace(rec, load=tuple(dataclasses.replace(lv, rps_stdev=stdev) for lv in rec.load))


def test_md_recommendation_keeps_every_cell_the_noise_cannot_tell_apart(tmp_path, records):
    # batched 870 and lazy 830 with a spread of 40 each: 40 apart is 0.7 standard errors of their
    # difference. import-in-route's 760 (spread 5) is 110 behind: 2.7 standard errors, beyond
    # the 2.24 that 4 comparisons need.
    widened = [noisy(r, 40.0) if (r.strategy, r.server) in (("lazy", "gunicorn-sync"),
                                                           ("child-process-batched", "gunicorn-sync")) else r
               for r in records]
    write_report(widened, tmp_path, "test", RUN_INFO)
    assert recommended(read_md(tmp_path)) == ["child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady",
                                              "lazy/gunicorn-sync/w2/mlp-small/cpu/steady"]
    assert "-4.6%" in section(read_md(tmp_path), "Recommendation")  # lazy behind the best


def test_md_recommendation_within_budgets(tmp_path, records):
    from forkwise.matrix.records.budgets import Budgets

    # p99 within 5 ms: only the c1 levels (2 ms) qualify; lazy 300 and import-in-route 290 under
    # gunicorn-sync are 1.4 standard errors apart; lazy under uwsgi (280) is 2.8 behind.
    tight = {**RUN_INFO, "recommend": Budgets(p99_ms=5.0, p99_from="command line").to_dict()}
    write_report(records, tmp_path / "p99", "test", tight)
    md = read_md(tmp_path / "p99")
    assert recommended(md) == ["lazy/gunicorn-sync/w2/mlp-small/cpu/steady",
                               "import-in-route/gunicorn-sync/w2/mlp-small/cpu/steady"]
    assert "| lazy/gunicorn-sync/w2/mlp-small/cpu/steady | 1 |" in md
    assert "at most 5 ms (set by: command line)" in md
    # Memory within 1000 MB total PSS: the model-in-worker cells (1250-1300 MB) are out.
    lean = {**RUN_INFO, "recommend": Budgets(memory_mb=1000.0, memory_from="profile x").to_dict()}
    write_report(records, tmp_path / "mem", "test", lean)
    md = read_md(tmp_path / "mem")
    assert recommended(md) == ["child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady"]
    assert "1 cells qualify; out: 4 over the memory budget" in md
    assert "total PSS at most 1,000 MB (set by: profile x)" in md


def test_md_recommendation_without_a_candidate(tmp_path, records):
    from forkwise.matrix.records.budgets import Budgets

    write_report([crash_record(), hang_record()], tmp_path / "none", "test", RUN_INFO)
    assert "this run recommends nothing" in section(read_md(tmp_path / "none"), "Recommendation")
    impossible = {**RUN_INFO, "recommend": Budgets(p99_ms=1.0).to_dict()}
    write_report(records, tmp_path / "tight", "test", impossible)
    text = section(read_md(tmp_path / "tight"), "Recommendation")
    assert "out: 5 with no level within the p99 budget: this run recommends nothing" in text


def test_md_recommendation_answers_each_model_apart(tmp_path, records):
    # A large model's cells are slower: compared with the small model's, they would never be in
    # its set; they answer their own question.
    large = [with_level_rps(r, 0.3).with_axes(model="large") for r in records
             if r.verdict.ok and r.strategy in ("control", "lazy")]
    write_report(records + large, tmp_path, "test", RUN_INFO)
    text = section(read_md(tmp_path), "Recommendation")
    assert "### model mlp-small on cpu" in text and "### model large on cpu" in text
    large_part = text[text.index("### model large on cpu"):]
    assert "1 of 2 cells serving model large on cpu" in large_part
    assert "lazy/gunicorn-sync/w2/large/cpu/steady" in large_part


def point(rps: float, stderr: float, name: str = "x"):
    from forkwise.matrix.analysis.recommend import Point

    return Point(record(name, "uwsgi"), level(8, rps), stderr)


def test_contenders_follow_the_standard_errors():
    from forkwise.matrix.analysis.recommend import contenders, critical_z

    assert critical_z(0) == 0.0 and critical_z(1) == pytest.approx(1.645, abs=1e-3)
    best, close, far = point(1000.0, 30.0), point(950.0, 30.0), point(700.0, 30.0)
    assert contenders([best, close, far]) == [best, close]
    # No spread measured anywhere: nothing tells the cells apart.
    flat = [point(1000.0, 0.0), point(500.0, 0.0)]
    assert contenders(flat) == flat


def test_budgets_from_the_profile_and_the_command_line(tmp_path):
    from forkwise.errors import ConfigError
    from forkwise.matrix.records.budgets import Budgets
    from forkwise.matrix.run.runner import load_profile

    toml = tmp_path / "mine.toml"
    toml.write_text('[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\nworkers = [2]\nmodel = ["default"]\n'
                    "[recommend]\np99_ms = 50\nmemory_mb = 900\n")
    budgets = load_profile(str(toml)).recommend
    assert (budgets.p99_ms, budgets.memory_mb, budgets.p99_from) == (50, 900, "profile mine")
    assert load_profile("quick").recommend == Budgets()
    mixed = budgets.overridden(None, 1200.0, "command line")
    assert (mixed.p99_ms, mixed.p99_from, mixed.memory_mb, mixed.memory_from) == (50, "profile mine", 1200.0,
                                                                                 "command line")
    assert Budgets.from_dict(mixed.to_dict()) == mixed
    for bad in ({"p99": 50}, {"p99_ms": 0}, {"memory_mb": -1}, {"p99_ms": True}, {"p99_ms": "50"}):
        with pytest.raises(ConfigError):
            Budgets.from_table(bad, "profile x")


def test_report_dir_takes_budgets_from_the_command_line(tmp_path, records):
    from forkwise.matrix.publish.folder import report_dir
    from forkwise.matrix.records.budgets import Budgets

    for rec in records:
        append_record(tmp_path / "records.jsonl", rec)
    budgets = Budgets(p99_ms=50.0, p99_from="profile mine")
    (tmp_path / "run.json").write_text(json.dumps({**RUN_INFO, "recommend": budgets.to_dict()}))
    report_dir(tmp_path, memory_mb=1000.0)
    text = section(read_md(tmp_path), "Recommendation")
    assert "at most 50 ms (set by: profile mine) and total PSS at most 1,000 MB (set by: command line)" in text
    report_dir(tmp_path)  # the run's own budgets again
    assert "no memory budget" in section(read_md(tmp_path), "Recommendation")


COMMITTED = Path(__file__).resolve().parent / "fixtures" / "default-runs"  # two recorded runs of the same code


def test_two_committed_runs_of_the_same_code_agree_on_the_answer():
    from forkwise.matrix.analysis.launches import combine_all
    from forkwise.matrix.analysis.recommend import candidates, contenders, disagreements, questions
    from forkwise.matrix.records.budgets import Budgets

    a = combine_all(read_records(COMMITTED / "run-a" / "records.jsonl"))
    b = combine_all(read_records(COMMITTED / "run-b" / "records.jsonl"))
    assert disagreements(a, b, Budgets()) == []
    assert questions(a) == questions(b) and len(questions(a)) == 2  # the default and the large model
    for what in questions(a):
        found_a, found_b = candidates(a, Budgets(), what), candidates(b, Budgets(), what)
        set_a = {p.record.cell_id for p in contenders(found_a.points)}
        set_b = {p.record.cell_id for p in contenders(found_b.points)}
        assert found_a.points[0].record.cell_id in set_b and found_b.points[0].record.cell_id in set_a


def test_a_contradiction_between_runs_is_found(records):
    from forkwise.matrix.analysis.recommend import disagreements
    from forkwise.matrix.records.budgets import Budgets

    assert disagreements(records, run_records(), Budgets()) == []
    # Run b: batched, run a's answer, far behind lazy and import-in-route, which it led in run a.
    slow = [with_level_rps(r, 0.5) if r.strategy == "child-process-batched" else r for r in run_records()]
    found = disagreements(records, slow, Budgets())
    assert "model mlp-small on cpu: the two runs' sets have no cell in common" in found
    assert ("child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady clearly ahead of "
            "lazy/gunicorn-sync/w2/mlp-small/cpu/steady in run a, clearly behind in run b") in found
    failed = [dataclasses.replace(r, verdict=Verdict.CRASH) if r.strategy == "child-process-batched" else r
              for r in run_records()]
    assert ("child-process-batched/gunicorn-sync/w2/mlp-small/cpu/steady: recommended by run a, not a candidate "
            "in run b") in disagreements(records, failed, Budgets())


def test_a_cell_at_the_edge_of_one_set_is_no_contradiction(records):
    from forkwise.matrix.analysis.recommend import disagreements
    from forkwise.matrix.records.budgets import Budgets

    # Run a cannot tell lazy (830) from batched (870): both spread widely. Run b can: it is in
    # a's set and not in b's, and nothing contradicts.
    wide = [noisy(r, 40.0) if (r.strategy, r.server) in (("lazy", "gunicorn-sync"),
                                                        ("child-process-batched", "gunicorn-sync")) else r
            for r in records]
    assert disagreements(wide, run_records(), Budgets()) == []


def with_level_rps(rec: CellRecord, factor: float) -> CellRecord:
    return dataclasses.replace(rec, load=tuple(dataclasses.replace(lv, rps=lv.rps * factor) for lv in rec.load))

# --- results.html --------------------------------------------------------------------------


def test_html_has_plots_and_escapes_text(out):
    page = (out / "results.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') >= 3
    assert "<script>alert" not in page  # a log's text: escaped in the report, \u003c in the explorer's JSON
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "\\u003cscript\\u003ealert" in page
    assert '<td class="v-HANG">HANG</td>' in page
    assert "830.0 ± 5.0" in page  # the per-cell table
    assert "Throughput against p99 latency of the candidates" in page  # the recommendation's plot
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # self-contained
    assert 'id="fw-data"' in page and "forkwise's results explorer" in page  # the explorer, inlined


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
    from forkwise.matrix.analysis.goals import evaluate

    pss = {("control", 2): 100, ("control", 4): 150, ("lazy", 2): 1300, ("lazy", 4): 2500,
           ("child-process-batched", 2): 700, ("child-process-batched", 4): 800}
    ceiling, batching, _, _, _, mem, fast, _ = evaluate(_goal_records(1800.0, 500.0, pss), {})
    assert ceiling.met and ceiling.ratio == pytest.approx(0.9)  # batched 1800 / control 2000
    assert batching.met and batching.ratio == pytest.approx((1800 / 2) / (500 / 4), rel=1e-2)
    assert mem.met and "gap 600" in mem.measured and "gap 1700" in mem.measured
    assert fast.met is None  # no benchmark results: said, not guessed

    slow = evaluate(_goal_records(1000.0, 900.0, pss),
                    {"test_locked_singleton_overhead_vs_global": {"overhead_ns": 5.0},
                     "test_model_server_round_trip_1x256": {"round_trip_us": 600.0, "model_call_us": 450.0}})
    assert slow[0].met is False and slow[0].ratio == pytest.approx(0.5)
    assert slow[6].met is False and "model call 450 us" in slow[6].measured


PROFILE_TEXT = ("10 samples of busy threads\n\ninclusive  function\n 100.0%  main\n"
                "   60.0%  Predictor.__call__ (r.py:1)\n"
                "   20.0%  Database.record (d.py:1)\n\nself       function\n    70.0%  quick_execute (x.py:1)\n")


def missed_goal_records() -> list[CellRecord]:
    pss = {("control", 2): 100, ("control", 4): 150, ("lazy", 2): 1300, ("lazy", 4): 2500,
           ("child-process-batched", 2): 700, ("child-process-batched", 4): 800}
    return _goal_records(1000.0, 900.0, pss)  # goal 1 missed: 1000 / 2000


def test_missed_goals_show_the_profiles_of_their_cells_from_this_machine(tmp_path):
    from forkwise.matrix.analysis.goal_provenance import write_profile_provenance
    from forkwise.matrix.analysis.goals import record_profile_label as profile_label

    recs = missed_goal_records()
    best = next(r for r in recs if r.strategy == "child-process-batched" and r.model == "default" and r.workers == 2)
    control = next(r for r in recs if r.strategy == "control" and r.model == "default" and r.workers == 2)
    profiles = tmp_path / "run" / "profiles"  # the run's own folder (goal_evidence)
    profiles.mkdir(parents=True)
    (profiles / f"{profile_label(best)}.worker-42.txt").write_text(PROFILE_TEXT)
    write_profile_provenance(profiles, profile_label(best), environment())
    (profiles / f"{profile_label(control)}.worker-43.txt").write_text(PROFILE_TEXT)  # no provenance
    write_report(recs, tmp_path / "run", "test", RUN_INFO)
    text = (tmp_path / "run" / "RESULTS.md").read_text()
    assert "### Goal 1 missed: where the time goes" in text
    assert f"**Profiled:** {profile_label(best)}, commit 4936e01, 2026-11-26T10:00:00Z, on Test CPU @ 3.0GHz" in text
    assert "worker-42: 10 samples" in text and "    70.0%  quick_execute (x.py:1)" in text
    assert "model call 60%, database write 20% of the busy samples" in text
    assert f"the profile of {profile_label(control)} is not shown: it says nothing of where it was taken" in text
    assert "worker-43" not in text


def test_profiles_from_another_machine_are_left_out(tmp_path):
    from forkwise.matrix.analysis.goal_provenance import write_profile_provenance
    from forkwise.matrix.analysis.goals import record_profile_label as profile_label

    recs = missed_goal_records()
    best = next(r for r in recs if r.strategy == "child-process-batched" and r.model == "default" and r.workers == 2)
    profiles = tmp_path / "run" / "profiles"  # the run's own folder (goal_evidence)
    profiles.mkdir(parents=True)
    (profiles / f"{profile_label(best)}.worker-42.txt").write_text(PROFILE_TEXT)
    write_profile_provenance(profiles, profile_label(best), dataclasses.replace(environment(), cores=16))
    write_report(recs, tmp_path / "run", "test", RUN_INFO)
    text = (tmp_path / "run" / "RESULTS.md").read_text()
    assert ("it was taken on another machine (commit 4936e01, 2026-11-26T10:00:00Z, on Test CPU @ 3.0GHz, 16 cores"
            in text)
    assert "worker-42" not in text


def bench_json(cpu: str, cores: int) -> dict:
    return {
        "machine_info": {"cpu": {"brand_raw": cpu, "count": cores}, "python_version": "3.11.9"},
        "commit_info": {"id": "0211d461e790cdca5fb86858c8b535a83e88b1d3", "dirty": False},
        "datetime": "2026-11-26T05:31:24+00:00",
        "benchmarks": [
            {"name": "test_locked_singleton_overhead_vs_global", "extra_info": {"overhead_ns": 5.0}},
            {"name": "test_model_server_round_trip_1x256",
             "extra_info": {"round_trip_us": 120.0, "model_call_us": 80.0}},
        ],
    }


def test_micro_benchmarks_count_only_from_this_machine(tmp_path, records):
    bench = tmp_path / "mine" / "bench"  # the run's own folder (goal_evidence)
    bench.mkdir(parents=True)
    (bench / "benchmarks.json").write_text(json.dumps(bench_json("Test CPU @ 3.0GHz", 2)))
    write_report(records, tmp_path / "mine", "test", RUN_INFO)
    goals = section(read_md(tmp_path / "mine"), "Performance goals")
    assert ("**Micro-benchmarks:** bench/benchmarks.json, commit 0211d461e790, 2026-11-26T05:31:24+00:00, "
            "on Test CPU @ 3.0GHz, 2 cores, Python 3.11.9.") in goals
    assert "round trip 120 us" in goals and "| met |" in goals.split("| 7 |")[1]

    theirs = tmp_path / "theirs" / "bench"
    theirs.mkdir(parents=True)
    (theirs / "benchmarks.json").write_text(json.dumps(bench_json("Other CPU", 8)))
    write_report(records, tmp_path / "theirs", "test", RUN_INFO)
    goals = section(read_md(tmp_path / "theirs"), "Performance goals")
    assert "was measured on another machine (commit 0211d461e790, 2026-11-26T05:31:24+00:00, on Other CPU" in goals
    assert "round trip 120 us" not in goals
    assert "not measured in this run" in goals.split("| 7 |")[1]


def test_a_missed_micro_benchmark_goal_points_at_its_breakdown_not_at_profiles():
    from forkwise.matrix.analysis.goals import Goal
    from forkwise.matrix.publish.document import render_markdown
    from forkwise.matrix.publish.goals_report import profile_blocks

    goal = Goal(4, "model-server round trip", "+153 us (the round trip itself 76 us)", 1.53, "<= 100 us", False)
    text = render_markdown(profile_blocks(goal, {}, None))
    assert "micro-benchmark's goal" in text and "No profile" not in text


def test_run_info_reads_every_run_json_and_writes_it_back():
    from forkwise.matrix.records.run_info import RunInfo

    for folder in sorted((Path(__file__).parent.parent / "results").iterdir()):
        if (folder / "run.json").exists():
            raw = json.loads((folder / "run.json").read_text())
            info = RunInfo.read(folder)
            assert info.to_dict() == raw and list(info.to_dict()) == list(raw), folder
            assert not info.extra, f"{folder}: run.json keys RunInfo does not know: {sorted(info.extra)}"
    odd = RunInfo.from_dict({"profile": "p", "driver": "wrk", "bench": {}})  # never written by a run: kept aside
    assert odd.profile == "p" and dict(odd.extra) == {"driver": "wrk", "bench": {}}
    assert list(odd.to_dict()) == ["profile", "driver", "bench"]


def test_strategy_and_server_order_come_from_their_classes():
    from forkwise.matrix.analysis.ordering import server_order, strategy_order
    from forkwise.servers import names as server_names
    from forkwise.strategies import registry

    assert server_order() == tuple(server_names())
    ranks = [registry.get(name).report_rank for name in strategy_order()]
    assert ranks == sorted(ranks) and set(strategy_order()) == set(registry.names())
    assert strategy_order()[0] == "import-in-route" and "control" in strategy_order()


def test_answer_cases_hold_each_case_cells(records):
    from forkwise.matrix.analysis.article import answer_cases

    answers = answer_cases(records)
    assert [a.case.number for a in answers] == [1, 2, 3]
    for a in answers:
        assert all(r.strategy == a.case.strategy and r.scenario == "steady" for r in a.evidence)
        assert all(r.strategy == a.case.strategy and r.scenario != "steady" for r in a.not_counted)
        assert a.observed == (None if not a.evidence else any(not r.verdict.ok for r in a.evidence))
