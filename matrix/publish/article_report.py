"""The report's section on the article's three cases: what ``analysis.article`` found, in words and
a table per case."""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.matrix.analysis.article import EVIDENCE_SCENARIO, ArticleCase, answer_cases, verdict_summary
from forkwise.matrix.analysis.ordering import ordered, server_order, server_rank
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table
from forkwise.matrix.records.types import CellRecord


def case_sentence(case: ArticleCase, cells: Sequence[CellRecord]) -> str:
    """One sentence, generated from the verdicts of the case's evidence in this run."""
    if not cells:
        return (f"{case.strategy} was not run in the {EVIDENCE_SCENARIO} scenario in this profile, so the "
                f"article's claim that {case.claim} was neither confirmed nor refuted.")
    n = len(cells)
    ok = sum(1 for r in cells if r.verdict.ok)
    summary = verdict_summary([r.verdict for r in cells])
    servers = {r.server for r in cells}
    unit = "server settings" if len(servers) == n else "cells"
    every = f"all {n} {unit}" if n > 1 else f"its only {unit[:-1]}, {cells[0].server}"
    if ok == n:
        return (f"{case.strategy} answered correctly under {every} ({summary}): "
                f"the article's claim that {case.claim} was not observed.")
    if ok == 0:
        return (f"{case.strategy} failed under {every} ({summary}): "
                f"the article's claim that {case.claim} was observed.")
    failing = ", ".join(ordered({r.server for r in cells if not r.verdict.ok}, server_order()))
    return (f"{case.strategy} answered correctly under {ok} of {n} {unit} ({summary}) and failed on "
            f"{failing}: the article's claim that {case.claim} was observed there only.")


def other_scenarios_sentence(cells: Sequence[CellRecord]) -> str:
    scenarios = ordered({r.scenario for r in cells}, ())
    parts = [f"{s} ({verdict_summary([r.verdict for r in cells if r.scenario == s])})" for s in scenarios]
    return (f"{'; '.join(parts)}. They test how a running deployment takes a disruption, not its workers' "
            "first requests, so they are not evidence for this case (see Reliability).")


def case_table(cells: Sequence[CellRecord]) -> Table:
    rows = tuple(
        (r.cell_id, r.verdict.value, r.evidence.findings[0] if r.evidence.findings else MISSING)
        for r in sorted(cells, key=lambda r: (server_rank(r.server), r.cell_id))
    )
    return Table(("cell", "verdict", "first finding"), rows)


def related_sentence(strategy: str, cells: Sequence[CellRecord]) -> str:
    if not cells:
        return f"{strategy}: not run in the {EVIDENCE_SCENARIO} scenario in this profile."
    return f"{strategy}: {verdict_summary([r.verdict for r in cells])} over {len(cells)} cells."


# --- the section ------------------------------------------------------------------------------


def article_section(records: Sequence[CellRecord]) -> list[Block]:
    blocks: list[Block] = [
        Heading("The article's three cases, answered"),
        Para(f"Each case is judged by its strategy's cells in the {EVIDENCE_SCENARIO} scenario: a fresh "
             "deployment whose workers take their first requests concurrently, which is what the article's "
             "claims are about."),
    ]
    for answer in answer_cases(records):
        case = answer.case
        blocks.append(Heading(f"Case {case.number}: {case.title} (strategy {case.strategy})", 3))
        blocks.append(Para(case_sentence(case, answer.evidence), "Observed:"))
        if answer.evidence:
            blocks.append(case_table(answer.evidence))
        if answer.not_counted:
            blocks.append(Para(other_scenarios_sentence(answer.not_counted), "Not counted:"))
        for strategy, cells in answer.related:
            blocks.append(Para(related_sentence(strategy, cells), "For comparison,"))
    return blocks
