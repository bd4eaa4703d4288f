"""Every figure in a run's story (results/<run>/NOTES.md) is one its records or its rendered reports
hold: a number that appears in none of RESULTS.md, COMPARE.md, run.json, finalists.json or the
records (as written, or rounded as a report rounds it) was not measured by that run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from forkwise.matrix.analysis.launches import combine_all
from forkwise.matrix.records.jsonl import read_records

RESULTS = Path(__file__).resolve().parents[1] / "results"
SOURCES = ("RESULTS.md", "COMPARE.md", "run.json", "finalists.json", "records.jsonl")
# A figure: digits with thousands commas and decimals, not part of a word, a version, a path or a reference.
FIGURE = re.compile(r"(?<![\w.#/-])\d[\d,]*(?:\.\d+)?(?![\w/-]|\.\d)")
# Not figures: link targets, code, dates and times, commits, versions.
NOT_FIGURES = re.compile(r"\]\([^)]*\)|`[^`]*`|\b\d{4}-\d{2}-\d{2}(?:T[\d:+]+)?|\b[0-9a-f]{7,40}\b|\b\d+\.\d+\.\d+\S*")


def figures(text: str) -> set[str]:
    return {m.group(0).replace(",", "") for m in FIGURE.finditer(NOT_FIGURES.sub(" ", text))}


def as_reported(value: str) -> set[str]:
    """A recorded number, and how a report may round it."""
    number = float(value)
    half_up = str(int(number + 0.5))  # Python rounds halves to even; a person writing a report, up
    return {value, *(f"{number:.{digits}f}" for digits in (0, 1, 2)), str(round(number)), half_up}


def known_figures(run: Path) -> set[str]:
    """Every figure the run's files hold, as a report may round it, and the counts its records give:
    cells, launches, cells of each verdict."""
    text = "".join((run / name).read_text() for name in SOURCES if (run / name).exists())
    return {shown for value in figures(text) for shown in as_reported(value)} | record_counts(run)


def record_counts(run: Path) -> set[str]:
    records_path = run / "records.jsonl"
    if not records_path.exists():
        return set()
    records = combine_all(read_records(records_path))
    verdicts = Counter(r.verdict.value for r in records)
    return {str(len(records)), *(str(n) for n in verdicts.values())}


def cited_runs(run: Path, text: str) -> list[Path]:
    """The run itself and every other run folder its story names (results/<name>)."""
    named = {m.group(1) for m in re.finditer(r"results/([\w.-]+)", text)}
    return [run, *(run.parent / name for name in sorted(named) if name != run.name and (run.parent / name).is_dir())]


def unknown_figures(run: Path) -> list[str]:
    """The figures of the run's NOTES.md that none of its records and reports hold, nor those of the
    runs it names (single digits are counts too common to tell: left out)."""
    text = (run / "NOTES.md").read_text()
    known = set().union(*(known_figures(folder) for folder in cited_runs(run, text)))
    return sorted(f for f in figures(text) if f not in known and not (f.isdigit() and int(f) < 10))


@pytest.mark.parametrize("run", sorted(p.parent.name for p in RESULTS.glob("*/NOTES.md")))
def test_every_figure_of_a_run_story_is_in_its_records(run):
    assert unknown_figures(RESULTS / run) == []


def test_the_check_finds_a_figure_no_record_holds(tmp_path):
    (tmp_path / "RESULTS.md").write_text("| lazy | 1,114.6 rps | p99 15.6 ms |\n")
    (tmp_path / "run.json").write_text('{"duration_s": 2064.3, "launches": 132}')
    (tmp_path / "NOTES.md").write_text("The run took 2064 s for 132 launches at 1,114.6 rps (commit `abc1234`, "
                                       "2026-12-07, tensorflow 2.21.0); lazy did 1,250 rps.\n")
    assert unknown_figures(tmp_path) == ["1250"]
