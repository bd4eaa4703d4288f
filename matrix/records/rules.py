"""When the verdict rules (``matrix.verdicts``) changed, and what a record was judged by.

A record is judged once, in the cell process, by the rules of its day; a report re-renders it
later, maybe under newer rules. So each record keeps the date of the rules that judged it
(``CellRecord.judged_by``), and a report names every verdict made under an older rule, with
what changed since: re-run those cells to judge them by today's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RuleChange:
    date: str  # ISO day the rule took effect (".2": the day's second change), ordered as text
    what: str  # what changed, for a report's reader
    disruptions_only: bool = False  # it can move only a disrupted cell's verdict (a reliability scenario)


# Newest last. Only changes that can move a verdict are listed.
CHANGES: tuple[RuleChange, ...] = (
    RuleChange("2026-11-27", "a request left unanswered is a HANG only when the deployment made no CPU progress "
                             "for a request timeout; unanswered while it computed is an ERROR (before: any request "
                             "unanswered within the cell's fixed timeout was a HANG)"),
    RuleChange("2026-12-07", "a request left unanswered is also a HANG when one worker made no CPU progress for a "
                             "request timeout while the rest of the deployment computed (before: an ERROR)"),
    RuleChange("2026-12-07.2", "a disrupted cell's recovery is judged on its rates divided by the share of the "
                               "machine's cores the rest of the machine left it (before: on the raw rates, so a "
                               "neighbour that started computing after the event made a recovered cell a CRASH)",
               disruptions_only=True),
    RuleChange("2026-12-07.3", "a cell whose /readyz said ready while requests failed (at boot: longer than the probes "
                               "resolve; in a disruption: longer than its recovery allowance), or stayed not ready "
                               "while it served for longer than that allowance, is an ERROR (before: /readyz was "
                               "not polled)"),
)
CURRENT = CHANGES[-1].date
BEFORE_FIRST = "before " + CHANGES[0].date


def inferred(judged_by: str, day: str, progress_watched: bool) -> str:
    """The rules a record was judged by: its own word, or, for a record made before records said
    (`judged_by` ""), what its observations show: CPU progress watched means the rule of the first
    change (the second one came with this field), none and an earlier day means the rule before."""
    if judged_by:
        return judged_by
    if progress_watched or day >= CHANGES[0].date:
        return CHANGES[0].date
    return BEFORE_FIRST


def changed_since(judged_by: str, disrupted: bool = True) -> tuple[RuleChange, ...]:
    """The rule changes a record judged by `judged_by` did not see (of a cell without a disruption:
    those that could move its verdict)."""
    changes = CHANGES if judged_by == BEFORE_FIRST else tuple(c for c in CHANGES if c.date > judged_by)
    return tuple(c for c in changes if disrupted or not c.disruptions_only)


def older_rules(judged: Iterable[tuple[str, bool]]) -> Counter[str]:
    """Of a run's records' (rules date, disrupted), the dates older than today's for them, with their counts."""
    return Counter(date for date, disrupted in judged if changed_since(date, disrupted))
