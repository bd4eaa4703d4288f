"""The soak scenario's arithmetic and rule (forkwise.matrix.records.soak, verdicts.judge_soak): a
planted leak is found, a flat or merely noisy series is not, the warm-up is left out; and its
settings are declared once (plan, profile, the reliability profile)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from forkwise.errors import ConfigError
from forkwise.matrix import verdicts
from forkwise.matrix.records import soak as sk
from forkwise.matrix.records.types import Verdict as V

INTERVAL_S = 5.0


def series(rss, fds=None, conns=None, rate_rps=50.0, n=12, failed=0, rows_missing=0):
    """A soak of `n` intervals whose totals are rss(i), fds(i), conns(i)."""
    intervals = []
    for i in range(n):
        done = int(rate_rps * INTERVAL_S * (i + 1))
        ok = int(rate_rps * INTERVAL_S)
        intervals.append(sk.SoakInterval(
            t_s=INTERVAL_S * (i + 1), requests=done, ok=ok, timeout=0, connect=0, http_4xx=0,
            http_5xx=failed if i == n - 1 else 0,
            p50_ms=2.0, p99_ms=9.0, total_rss_mb=rss(i), total_pss_mb=rss(i) * 0.8, total_uss_mb=rss(i) * 0.6,
            fds=fds(i) if fds else 40, db_connections=conns(i) if conns else None, rows_expected=ok,
            rows_found=ok - (rows_missing if i == 0 else 0), unacknowledged=0))
    rss_g, fds_g, conns_g = sk.fit_soak(intervals)
    return sk.Soak(capacity_rps=2 * rate_rps, fraction=0.5, rate_rps=rate_rps, duration_s=n * INTERVAL_S,
                   interval_s=INTERVAL_S, warmup_intervals=sk.warmup_intervals(n), intervals=tuple(intervals),
                   rss=rss_g, fds=fds_g, db_connections=conns_g)


def test_student_t_quantiles():
    assert sk.t975(1) == 12.706 and sk.t975(10) == 2.228 and sk.t975(30) == 2.042
    assert sk.t975(60) == pytest.approx(2.000, abs=0.002)  # tables: 2.000
    assert sk.t975(120) == pytest.approx(1.980, abs=0.002)  # tables: 1.980
    with pytest.raises(ValueError):
        sk.t975(0)


def test_an_exact_line_has_its_slope_and_no_interval():
    fit = sk.fit_line([1, 2, 3, 4], [3, 5, 7, 9])
    assert fit.slope == pytest.approx(2) and fit.intercept == pytest.approx(1)
    assert fit.low == pytest.approx(2) and fit.high == pytest.approx(2)
    with pytest.raises(ValueError):
        sk.fit_line([1, 1, 1], [1, 2, 3])


def test_a_planted_leak_is_a_leak_with_its_growth_per_time_and_per_requests():
    # 500 MB growing 1 MB a second (with noise): 600 MB per 10 min, ~120%; at 50 req/s, 10,000 requests
    # take 200 s: 200 MB, ~39% of the fitted level at the first kept interval (515 MB).
    rng = random.Random(1)
    soak = series(lambda i: 500 + INTERVAL_S * (i + 1) + rng.gauss(0, 1))
    assert soak.rss is not None
    assert soak.rss.per_10min == pytest.approx(120, rel=0.1)
    assert soak.rss.per_10min_low > sk.RSS_BOUND_PCT_PER_10MIN
    assert soak.rss.per_10k_requests == pytest.approx(100 * 200 / 515, rel=0.05)
    judgement = verdicts.judge_soak(soak)
    assert judgement.verdict is V.LEAK, judgement
    assert "total_rss_mb grew" in judgement.findings[0] and "95% interval" in judgement.findings[0]


def test_a_flat_series_is_ok():
    soak = series(lambda i: 800.0)
    assert soak.rss is not None and soak.rss.per_10min == 0
    assert verdicts.judge_soak(soak).verdict is V.OK


def test_noise_without_a_trend_is_ok():
    """The rule reads the interval's lower bound: noise alone (2% of the level, no trend) is no leak,
    for any of 30 seeds."""
    for seed in range(30):
        rng = random.Random(seed)
        soak = series(lambda i, rng=rng: 500 + rng.gauss(0, 10))
        assert verdicts.judge_soak(soak).verdict is V.OK, (seed, soak.rss)


def test_a_slow_growth_within_the_bound_is_ok():
    # 2% per 10 min, exact: below the 5% bound.
    assert verdicts.judge_soak(series(lambda i: 1000 + 20 / 600 * INTERVAL_S * (i + 1))).verdict is V.OK


def test_the_warm_up_is_left_out_of_the_fit():
    # The first interval (a tenth of 12, rounded up) jumps 200 MB as caches fill; flat after.
    soak = series(lambda i: 300.0 if i == 0 else 500.0)
    assert soak.warmup_intervals == 2 and soak.rss is not None and soak.rss.points == 10
    assert verdicts.judge_soak(soak).verdict is V.OK


def test_descriptors_and_connections_that_grow_are_a_leak():
    soak = series(lambda i: 500.0, fds=lambda i: 40 + i)  # one more descriptor every 5 s: 120 per 10 min
    judgement = verdicts.judge_soak(soak)
    assert judgement.verdict is V.LEAK and "fds grew" in judgement.findings[0]
    soak = series(lambda i: 500.0, conns=lambda i: 4 + i // 2)
    assert verdicts.judge_soak(soak).verdict is V.LEAK
    assert verdicts.judge_soak(series(lambda i: 500.0, conns=lambda i: 4)).verdict is V.OK
    assert series(lambda i: 500.0).db_connections is None  # SQLite: not applicable


def test_failed_requests_and_missing_rows_are_judged_like_under_load():
    assert verdicts.judge_soak(series(lambda i: 500.0, failed=3)).verdict is V.ERROR
    flat = series(lambda i: 500.0)
    last = flat.intervals[-1]
    # Refused connections: tolerated up to 1% of the requests, as under load.
    few = dataclasses.replace(flat, intervals=(*flat.intervals[:-1], dataclasses.replace(last, connect=3)))
    assert verdicts.judge_soak(few).verdict is V.OK
    many = dataclasses.replace(flat, intervals=(*flat.intervals[:-1], dataclasses.replace(last, connect=300)))
    assert verdicts.judge_soak(many).verdict is V.ERROR
    # Unanswered: a HANG when the deployment stood idle for a slice, an ERROR while it computed.
    hung = dataclasses.replace(flat, intervals=(*flat.intervals[:-1], dataclasses.replace(last, timeout=2)),
                               longest_idle_s=12.0, blocked_after_s=10.0, longest_worker_stall_s=12.0)
    assert verdicts.judge_soak(hung).verdict is V.HANG
    assert verdicts.judge_soak(dataclasses.replace(hung, longest_idle_s=1.0, longest_worker_stall_s=1.0)).verdict \
        is V.ERROR
    judgement = verdicts.judge_soak(series(lambda i: 500.0, rows_missing=2))
    assert judgement.verdict is V.LOST and "the table gained" in judgement.findings[0]


def test_too_few_intervals_fit_nothing():
    assert series(lambda i: 500.0 + 100 * i, n=4).rss is None


def test_leak_is_the_least_severe_failure():
    assert verdicts.most_severe([V.LEAK, V.LOST]) is V.LOST
    assert verdicts.most_severe([V.LEAK, V.OK]) is V.LEAK


def test_the_soak_settings_are_declared_once_and_checked():
    from forkwise.matrix.run.plan import CellPlan
    from forkwise.matrix.run.profile import LoadSettings, load_profile
    from forkwise.matrix.run.scenarios import SCENARIOS

    assert sk.SOAK in SCENARIOS
    assert LoadSettings().soak_fraction == CellPlan.of(strategy="control", server="uwsgi").soak_fraction == 0.5
    with pytest.raises(ConfigError, match="soak_fraction"):
        LoadSettings(soak_fraction=1.5)
    with pytest.raises(ConfigError, match="soak_duration_s"):
        LoadSettings(soak_duration_s=0)
    reliability = load_profile("reliability")
    assert reliability.load.soak_duration_s == 600
    assert any(c.scenario == sk.SOAK for c in reliability.cells)
    for quick in ("quick", "default"):
        assert not any(c.scenario == sk.SOAK for c in load_profile(quick).cells)


def test_the_report_tables_each_soak_cell_and_plots_it_in_the_page(tmp_path):
    from forkwise.matrix.publish.report import write_report
    from forkwise.matrix.records.types import Evidence
    from test_report import RUN_INFO, record

    leak = series(lambda i: 500 + INTERVAL_S * (i + 1))
    flat = series(lambda i: 500.0)
    records = [record("lazy", "gunicorn-gthread", V.LEAK, scenario="soak", soak=leak,
                      evidence=Evidence(findings=verdicts.judge_soak(leak).findings)),
               record("control", "gunicorn-gthread", scenario="soak", soak=flat)]
    write_report(records, tmp_path, "test", RUN_INFO)
    text = (tmp_path / "RESULTS.md").read_text()
    section = text[text.index("## Soak"):]
    assert "| lazy/gunicorn-gthread/" in section and "| LEAK |" in section
    assert "not applicable (SQLite)" in section and "per 10k requests" in section
    page = (tmp_path / "results.html").read_text()
    assert page.count("memory over the soak, the line fitted after the warm-up</figcaption>") == 2  # one per cell
