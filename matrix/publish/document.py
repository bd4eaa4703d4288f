"""How a report presents things: blocks of a document, rendered to Markdown and to HTML, the
formatting of numbers in them, and figures (the order of cells is ``analysis.ordering``'s).

``report``, ``article``, ``recommend``, ``goals`` and ``plots`` build lists of blocks from a
run's records; ``render_markdown`` and ``render_html`` render the one document.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from forkwise.matrix.analysis.ordering import strategies_of
from forkwise.matrix.records.types import CellRecord, Verdict

MISSING = "-"


# --- numbers -------------------------------------------------------------------------------


def fmt_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, Verdict):
        return value.value
    return str(value)


def fmt_fixed(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        return f"{value:,.{digits}f}"

    return fmt


def fmt_ms(value: Any) -> str:
    if value is None:
        return MISSING
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def fmt_ratio(value: Any) -> str:
    return MISSING if value is None else f"{value:.2f}x"


def fmt_int(value: Any) -> str:
    return MISSING if value is None else f"{value:d}"


fmt_mib = fmt_fixed(0)


def fmt_spread(value: float, spread: float, samples: int) -> str:
    """'1,624.6 ± 56.3', or what stands for a spread that was not measured: one sample has none,
    and '± 0.0' would claim a measurement that never happened."""
    if samples <= 1:
        return f"{fmt_fixed(1)(value)} (one sample)"
    return f"{fmt_fixed(1)(value)} ± {fmt_fixed(1)(spread)}"


# --- blocks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    lead: str = ""  # shown in bold before the text


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Items:
    """A sentence that introduces a list, and the list."""

    intro: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Plot:
    caption: str
    png: bytes


Block = Heading | Para | Items | Table | Code | Plot


# --- figures -------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def strategy_colors(records: Sequence[CellRecord]) -> dict[str, str]:
    """One colour per strategy, the same in every panel and plot."""
    return {strategy: f"C{i % 10}" for i, strategy in enumerate(strategies_of(records))}


# --- renderers -----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def markdown_block(block: Block) -> str | None:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        return f"**{block.lead}** {block.text}" if block.lead else block.text
    if isinstance(block, Items):
        return "\n".join([block.intro, *(f"- {item}" for item in block.items)])
    if isinstance(block, Table):
        header = "| " + " | ".join(_md_cell(h) for h in block.headers) + " |"
        rule = "|" + "|".join(" --- " for _ in block.headers) + "|"
        body = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join([header, rule, *body])
    if isinstance(block, Code):
        fence = _md_fence(block.text)
        return f"{fence}text\n{block.text}\n{fence}"
    return None  # plots live in the HTML page only


def render_markdown(blocks: Sequence[Block]) -> str:
    parts = [text for text in (markdown_block(b) for b in blocks) if text is not None]
    return "\n\n".join(parts) + "\n"


_VERDICT_VALUES = {v.value for v in Verdict}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
td.v-OK { background: #d9f2d9; } td.v-HANG, td.v-CRASH, td.v-BOOT { background: #f7d4d4; }
td.v-ERROR, td.v-WRONG, td.v-LOST, td.v-LEAK { background: #fbe7c6; }
"""


def _html_td(text: str) -> str:
    cls = f' class="v-{text}"' if text in _VERDICT_VALUES else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        lead = f"<strong>{e(block.lead)}</strong> " if block.lead else ""
        return f"<p>{lead}{e(block.text)}</p>"
    if isinstance(block, Items):
        items = "".join(f"<li>{e(item)}</li>" for item in block.items)
        return f"<p>{e(block.intro)}</p><ul>{items}</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(_html_td(c) for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Code):
        return f"<pre>{e(block.text)}</pre>"
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


def render_html(blocks: Sequence[Block], title: str) -> str:
    body = "\n".join(html_block(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
