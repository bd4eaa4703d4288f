"""The report's answer that picks: each question's finalists, ranked from rounds measured
interleaved (``analysis.finalists``), with each one's ratio to the best, its confidence interval
and the minimum detectable effect at 80% power."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forkwise.matrix.analysis import finalists as analysis
from forkwise.matrix.analysis.significance import FAMILY_ALPHA
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table
from forkwise.matrix.records.run_info import load_stage_file

HEADERS = ("cell", "rounds", "rps (geometric mean)", "vs best", f"{100 * (1 - FAMILY_ALPHA):g}% interval",
           "MDE at 80% power", "standing")


def load_finalists(path: Path) -> dict[str, Any] | None:
    """A run's finalists.json, or None when the run had no finalists stage."""
    return load_stage_file(path, "questions")


def method_text(data: dict[str, Any]) -> str:
    return (f"After the passes, each question's cells that could be the best at concurrency {data['concurrency']} "
            "(within the budgets, not clearly behind another by the passes' noise) were booted side by side and "
            "measured again in rounds: every round loads each finalist for a short window, in a random order "
            f"(seed {data['seed']}). Each finalist is compared with the best within the same rounds (paired), "
            "so the host's drift falls on all of them alike. A finalist is behind when its whole interval is "
            f"below the best, tied when it is within {data['target_mde_pct']:g}% of the best and the rounds "
            "could have seen that much, undecided otherwise.")


def finalists_section(data: dict[str, Any] | None) -> list[Block]:
    if not data:
        return []
    blocks: list[Block] = [Heading("The answer: finalists measured interleaved", 2), Para(method_text(data))]
    for question in data["questions"]:
        blocks.append(Heading(f"Finalists: {question['served']}", 3))
        rounds = [r["rps"] for r in question["rounds"]]
        if len(rounds) < 2:
            blocks.append(Para(f"{question['stopped'] or 'not measured'} "
                               f"({', '.join(question['cells']) or 'no cell within the budgets'}).", "Not ranked:"))
            continue
        ranking = analysis.rank(rounds, data["target_mde_pct"])
        blocks += [Para(answer_text(ranking, question["stopped"]), "Answer:"),
                   Table(HEADERS, tuple(_row(s, rounds) for s in ranking.standings))]
        if question.get("notes"):
            blocks.append(Para("; ".join(question["notes"]) + ".", "How it was measured:"))
    return blocks


def answer_text(ranking: analysis.Ranking, stopped: str) -> str:
    """The best; those tied with it within the target MDE (with the power to see it) said as a tie;
    those not yet told apart named apart; the rest behind."""
    tied = [s.cell_id for s in ranking.standings if s.verdict == analysis.TIED]
    open_ = [s.cell_id for s in ranking.standings if s.verdict == analysis.UNDECIDED]
    behind = sum(s.verdict == analysis.BEHIND for s in ranking.standings)
    text = f"{ranking.best} serves the most"
    if tied:
        text += (f"; {', '.join(tied)} {'ties' if len(tied) == 1 else 'tie'} with it within "
                 f"{ranking.target_mde_pct:g}% (at 80% power)")
    if open_:
        text += f"; {', '.join(open_)} cannot be told from it yet"
    if behind:
        text += f"; {behind} {'finalist is' if behind == 1 else 'finalists are'} behind it"
    text += f" ({stopped})."
    needed = ranking.rounds_for(ranking.target_mde_pct)
    if needed is not None and needed > ranking.rounds:
        text += f" To detect {ranking.target_mde_pct:g}% here: about {needed} rounds."
    return text


def _row(standing: analysis.Standing, rounds: list[dict[str, float]]) -> tuple[str, ...]:
    interval = (MISSING if standing.verdict == analysis.BEST or standing.high == float("inf")
                else f"{standing.low:.3f}-{standing.high:.3f}")
    mde = MISSING if standing.mde_pct is None else f"{standing.mde_pct:.1f}%"
    return (standing.cell_id, str(standing.rounds), f"{analysis.geometric_mean(rounds, standing.cell_id):.1f}",
            f"{standing.ratio:.3f}", interval, mde, standing.verdict)
