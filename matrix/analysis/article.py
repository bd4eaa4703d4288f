"""The article's three cases, answered from a run's records.

Each case is a claim about what happens when forked workers meet the model on their first
requests: the article's strategy, run under every server setting, either answers correctly or
fails. Only cells that put that claim to the test count as its evidence: the steady scenario,
where a fresh deployment's workers take their first requests concurrently. A reliability
scenario tests something else (a worker recycled every N requests stalls while its successor
loads the model: a measured stall, not a race between workers), so its cells are listed apart
and never decide a case.

Which strategy tests a case is declared on its class (``Strategy.article_case``,
``Strategy.compared_in_case``), so a renamed strategy cannot silently leave a case without cells.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from forkwise import strategies
from forkwise.errors import ConfigError
from forkwise.matrix.analysis.ordering import latest_by_cell, strategy_order
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.types import CellRecord, Verdict

# The scenario whose cells test the article's claims: workers of a fresh deployment on their
# first, concurrent requests.
EVIDENCE_SCENARIO = STEADY


@dataclass(frozen=True)
class ArticleCase:
    number: int
    title: str
    claim: str  # what the article asserts; the run decides whether it was observed
    strategy: str = ""  # the strategy whose class says it tests this case (Strategy.article_case)
    related: tuple[str, ...] = ()  # those whose classes say they are compared in it (Strategy.compared_in_case)


# What the article says; which strategy tests each case, its class says.
_CASES = (
    ArticleCase(1, "import TensorFlow inside the route",
                "concurrent first imports of TensorFlow inside a route fail"),
    ArticleCase(2, "load at module level, before the fork",
                "loading TensorFlow at module level before the fork is still problematic"),
    ArticleCase(3, "a singleton loader (done properly: locked)",
                "a singleton loader cannot avoid races between forked workers on their first requests"),
)


@lru_cache(maxsize=1)
def article_cases() -> tuple[ArticleCase, ...]:
    """The article's cases, each with the registered strategy that tests it and those compared in it."""
    classes = [strategies.get(name) for name in strategy_order()]
    cases = []
    for case in _CASES:
        testing = [c.name for c in classes if c.article_case == case.number]
        if len(testing) != 1:
            raise ConfigError(f"article case {case.number} needs one strategy whose class sets "
                              f"article_case = {case.number}; found {testing or 'none'}")
        related = tuple(c.name for c in classes if c.compared_in_case == case.number)
        cases.append(dataclasses.replace(case, strategy=testing[0], related=related))
    return tuple(cases)


def verdict_summary(verdicts: Sequence[Verdict]) -> str:
    counts = Counter(verdicts)
    return ", ".join(f"{v.value} x{counts[v]}" for v in Verdict if counts[v])


def cells_of(records: Iterable[CellRecord], strategy: str) -> list[CellRecord]:
    return [r for r in latest_by_cell(records).values() if r.strategy == strategy]


def evidence_of(cells: Iterable[CellRecord]) -> list[CellRecord]:
    """The cells that test a case's claim."""
    return [r for r in cells if r.scenario == EVIDENCE_SCENARIO]


# --- the analysis: each case's cells --------------------------------------------------------


@dataclass(frozen=True)
class CaseAnswer:
    """What a run's records say of one case."""

    case: ArticleCase
    evidence: tuple[CellRecord, ...]  # its strategy's cells that test the claim
    not_counted: tuple[CellRecord, ...]  # its strategy's cells in other scenarios
    related: tuple[tuple[str, tuple[CellRecord, ...]], ...]  # each strategy compared in it, with its evidence

    @property
    def observed(self) -> bool | None:
        """Whether the claim (a failure) was observed in any of its evidence; None: no evidence."""
        return None if not self.evidence else not all(r.verdict.ok for r in self.evidence)


def answer_cases(records: Sequence[CellRecord]) -> list[CaseAnswer]:
    answers = []
    for case in article_cases():
        all_cells = cells_of(records, case.strategy)
        evidence = evidence_of(all_cells)
        related = tuple((name, tuple(evidence_of(cells_of(records, name)))) for name in case.related)
        answers.append(CaseAnswer(case, tuple(evidence), tuple(r for r in all_cells if r not in evidence), related))
    return answers
