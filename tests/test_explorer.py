"""results.html's explorer (forkwise.matrix.publish.explorer): the data it embeds comes from the analysis,
and in a real browser (Debian's headless Chromium, driven by Selenium) its filters, sorting, chart,
evidence and keyboard use work, with no console error. The page is built from the committed default
run (results/default) and from a merged folder of two recorded hosts (tests/fixtures/hosts)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from forkwise import checks
from forkwise.matrix.analysis.goals import evaluate
from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.analysis.recommend import candidates, contenders, questions
from forkwise.matrix.commands import merge
from forkwise.matrix.publish.explorer_page import DATA_ID
from forkwise.matrix.publish.report import write_report
from forkwise.matrix.publish.report_table import table_rows
from forkwise.matrix.records import axes
from forkwise.matrix.records.budgets import Budgets
from forkwise.matrix.records.jsonl import read_records
from forkwise.matrix.records.types import Verdict
from host_pace import command_bound_s

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "results" / "default"
HOSTS = Path(__file__).parent / "fixtures" / "hosts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")


def default_records() -> list:
    return list(read_records(DEFAULT_RUN / "records.jsonl"))


def write_default(out: Path) -> Path:
    info = json.loads((DEFAULT_RUN / "run.json").read_text())
    write_report(default_records(), out, info["profile"], info)
    return out / "results.html"


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    found = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', text, re.S)
    assert found is not None
    return json.loads(found.group(1))


def recommended(records) -> set[tuple[str, str]]:
    """(cell, concurrency) of every recommended level, as the analysis decides them."""
    budgets = Budgets.from_dict(json.loads((DEFAULT_RUN / "run.json").read_text()).get("recommend"))
    return {(p.record.cell_id, str(p.level.concurrency)) for what in questions(records)
            for p in contenders(candidates(records, budgets, what).points)}


@pytest.fixture(scope="module")
def default_page(tmp_path_factory) -> Path:
    return write_default(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def merged_page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "merged"
    merge([HOSTS / "ci-epyc-2", HOSTS / "gpu-h200"], out)
    return out / "results.html"


# --- the data: from the analysis, no browser needed --------------------------------------------------


def test_the_page_embeds_the_analysis_and_is_self_contained(default_page):
    text = default_page.read_text(encoding="utf-8")
    data = page_data(default_page)
    records = list(combine_all(default_records()))
    assert len(data["rows"]) == len(table_rows(records))
    assert [d["key"] for d in data["dimensions"]] == ["verdict", *axes.axis_names()]
    marked = {(r["v"]["cell_id"], str(r["v"]["concurrency"])) for r in data["rows"] if r["rec"]}
    assert marked == recommended(records) and marked
    assert [g["number"] for g in data["goals"]] == [g.number for g in evaluate([], {})]
    # Self-contained: nothing the page loads comes from elsewhere (log lines may name URLs: text only).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"url\(\s*['\"]?https?:", text)
    assert not any(call in text for call in ("fetch(", "XMLHttpRequest", "import(", "@import"))
    assert "Verdict matrix" in text and 'src="data:image/png;base64,' in text  # the static report, below


def test_a_new_axis_gets_a_filter(monkeypatch, tmp_path):
    colour = axes.Axis("colour", "a throwaway axis of this test", checks.TEXT, "plain", id_part=lambda v: f"c-{v}",
                       deployment=False)
    monkeypatch.setattr(axes, "AXES", (*axes.AXES[:-1], colour, axes.AXES[-1]))
    data = page_data(write_default(tmp_path))
    keys = [d["key"] for d in data["dimensions"]]
    assert "colour" in keys and keys.index("colour") == keys.index("scenario") - 1


def test_a_merged_page_has_the_host_as_a_filter_and_a_column(merged_page):
    data = page_data(merged_page)
    assert data["hosts"] == ["ci-epyc-2", "gpu-h200"]
    assert data["dimensions"][-1]["key"] == "host" and [c["key"] for c in data["columns"]][1] == "host"
    assert {r["host"] for r in data["recommendations"]} == {"ci-epyc-2", "gpu-h200"}


# --- in a browser ------------------------------------------------------------------------------------


def _found(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                    "'forkwise[test]')")
    binary, driver = _found(BROWSERS), _found(DRIVERS)
    if binary is None or driver is None:
        pytest.skip("no Chromium and chromedriver to drive (Debian: apt-get install chromium chromium-driver); "
                    f"found browser {binary}, driver {driver}")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(command_bound_s())
    chrome.set_script_timeout(command_bound_s())
    yield chrome
    chrome.quit()


def load(browser, page: Path):
    browser.get(page.as_uri())
    browser.get_log("browser")  # what loading said is checked by each test at its end, with the rest
    return browser


def severe(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def css(browser, selector: str) -> list:
    return browser.find_elements("css selector", selector)


def rows(browser) -> list:
    return css(browser, "#fw-table tbody tr")


def column_texts(browser, key: str) -> list[str]:
    return [td.text for td in css(browser, f'#fw-table tbody td[data-key="{key}"]')]


def checkbox(browser, dimension: str, value: str):
    return browser.find_element("css selector", f'input[data-dimension="{dimension}"][value="{value}"]')


def points_follow_rows(browser) -> None:
    with_measure = [tr for tr in rows(browser) if tr.get_attribute("data-point") == "1"]
    assert len(css(browser, "#fw-chart-svg .fw-point")) == len(with_measure)


def test_filters_change_the_rows_and_the_chart_follows(browser, default_page):
    load(browser, default_page)
    everything = len(rows(browser))
    assert everything == len(page_data(default_page)["rows"]) and css(browser, "#fw-chart-svg .fw-point")
    points_follow_rows(browser)
    checkbox(browser, "strategy", "control").click()
    assert 0 < len(rows(browser)) < everything and "control" not in column_texts(browser, "strategy")
    points_follow_rows(browser)
    browser.find_element("css selector", 'fieldset[data-dimension="verdict"] button[aria-label="hide every verdict"]'
                         ).click()
    assert rows(browser) == [] and css(browser, "#fw-chart-svg .fw-point") == []
    checkbox(browser, "verdict", "HANG").click()
    assert set(column_texts(browser, "verdict")) == {"HANG"}
    points_follow_rows(browser)
    assert f"Showing {len(rows(browser))} of {everything} rows" in browser.find_element("id", "fw-summary").text
    assert severe(browser) == []


def matrix(browser) -> dict[str, dict[str, str]]:
    """The verdict matrix as shown: strategy -> server -> text."""
    table = browser.find_element("css selector", ".fw-matrix-table")
    servers = [th.text for th in table.find_elements("css selector", "thead th")][1:]
    shown = {}
    for tr in table.find_elements("css selector", "tbody tr"):
        shown[tr.find_element("css selector", "th").text] = dict(
            zip(servers, [td.text for td in tr.find_elements("css selector", "td")], strict=True))
    return shown


def test_the_verdict_matrix_follows_the_filters(browser, default_page):
    load(browser, default_page)
    before = matrix(browser)
    assert before["preload"]["gunicorn-sync"] == "HANG" and before["lazy"]["uwsgi"] == "OK"
    checkbox(browser, "strategy", "preload").click()
    checkbox(browser, "server", "uwsgi").click()
    after = matrix(browser)
    assert "preload" not in after and all("uwsgi" not in servers for servers in after.values())
    assert severe(browser) == []


def _numbers(texts: list[str]) -> list[float]:
    return [float(t.split()[0].replace(",", "")) for t in texts if t != "-"]


def test_sorting_a_column_orders_the_rows(browser, default_page):
    load(browser, default_page)
    header = browser.find_element("css selector", 'th[data-key="p99_ms"] button')
    header.click()
    texts = column_texts(browser, "p99_ms")
    assert _numbers(texts) == sorted(_numbers(texts)) and texts[-1] == "-"  # a row without load: last
    assert browser.find_element("css selector", 'th[data-key="p99_ms"]').get_attribute("aria-sort") == "ascending"
    header.click()
    assert _numbers(column_texts(browser, "p99_ms")) == sorted(_numbers(texts), reverse=True)
    browser.find_element("css selector", 'th[data-key="strategy"] button').click()
    strategies = column_texts(browser, "strategy")
    assert strategies == sorted(strategies)
    assert severe(browser) == []


def test_clicking_a_row_shows_its_evidence(browser, default_page):
    load(browser, default_page)
    hung = next(r for r in combine_all(default_records()) if r.verdict is Verdict.HANG and r.evidence.stacks)
    row = next(tr for tr in rows(browser) if tr.find_element("css selector", "td").text == hung.cell_id)
    row.click()
    panel = browser.find_element("id", "fw-evidence")
    assert panel.is_displayed()
    text = panel.text
    assert f"{hung.cell_id}: HANG" in text and hung.evidence.findings[0].splitlines()[0] in text
    assert "Stacks: where each process was stuck" in text and "Log tail" in text
    assert severe(browser) == []


def test_the_recommended_cells_are_marked_in_the_table_and_the_chart(browser, default_page):
    load(browser, default_page)
    marked = {(tr.find_element("css selector", 'td[data-key="cell_id"]').text,
               tr.find_element("css selector", 'td[data-key="concurrency"]').text) for tr in css(browser, "tr.fw-rec")}
    assert marked == recommended(list(combine_all(default_records())))
    assert len(css(browser, "#fw-chart-svg .fw-ring")) == len(marked)
    assert all("★" in td.text for td in css(browser, 'tr.fw-rec td[data-key="marks"]'))


def press(browser, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys(key).perform()


def tab_until(browser, selector: str):
    """Press Tab until the focused element matches `selector`; that element (None: never)."""
    from selenium.webdriver.common.keys import Keys

    for _ in range(300):
        press(browser, Keys.TAB)
        if browser.execute_script("return document.activeElement.matches(arguments[0])", selector):
            return browser.switch_to.active_element
    return None


def test_the_keyboard_sorts_and_opens_a_row(browser, default_page):
    from selenium.webdriver.common.keys import Keys

    load(browser, default_page)
    header = tab_until(browser, "#fw-table thead button")  # through the filters, the chart, the recommendation
    assert header is not None, "Tab never reached a header of the table"
    key = header.get_attribute("data-key")
    press(browser, Keys.ENTER)
    assert browser.find_element("css selector", f'th[data-key="{key}"]').get_attribute("aria-sort") == "ascending"
    row = tab_until(browser, "#fw-table tbody tr")  # past the other headers: the first row
    assert row is not None and row == rows(browser)[0]
    press(browser, Keys.ENTER)
    panel = browser.find_element("id", "fw-evidence")
    assert panel.is_displayed() and row.find_element("css selector", "td").text in panel.text
    press(browser, Keys.ESCAPE)
    assert not panel.is_displayed() and browser.switch_to.active_element == row  # focus back on the row
    assert severe(browser) == []


def test_a_merged_page_filters_by_host(browser, merged_page):
    load(browser, merged_page)
    assert set(column_texts(browser, "host")) == {"ci-epyc-2", "gpu-h200"}
    checkbox(browser, "host", "gpu-h200").click()
    assert set(column_texts(browser, "host")) == {"ci-epyc-2"}
    points_follow_rows(browser)
    rec = browser.find_element("css selector", ".fw-highlights").text
    assert "ci-epyc-2: " in rec and "gpu-h200: " in rec
    assert severe(browser) == []


def test_a_screenshot_of_the_default_page(browser, default_page, tmp_path):
    load(browser, default_page)
    shot = tmp_path / "default-results.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("FORKWISE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    assert severe(browser) == []
