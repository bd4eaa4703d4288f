"""results.html: one self-contained page. The explorer (``explorer.js`` and ``explorer.css``, package
data inlined here: no network, no framework) reads the JSON ``explorer.explorer_data`` makes, embedded in
the page; below it, the report's static blocks (the Markdown twin's tables and sections, with the plots),
so the page without JavaScript still holds the whole report."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from forkwise.matrix.publish.document import CSS, Block, Heading, html_block

DATA_ID = "fw-data"
ASSETS = ("explorer.css", "explorer.js")


def asset(name: str) -> str:
    """A file of the explorer shipped with the package (pyproject's package-data)."""
    return resources.files("forkwise.matrix.publish").joinpath(name).read_text(encoding="utf-8")


def embedded_json(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could close it or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, data: dict[str, Any], blocks: Sequence[Block]) -> str:
    """The page: its title, the explorer, then the report's blocks (their own title left out)."""
    e = html.escape
    static = "\n".join(html_block(b) for b in blocks if not (isinstance(b, Heading) and b.level == 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
        f"<style>{CSS}{asset('explorer.css')}</style>\n</head>\n<body>\n"
        f"<h1>{e(title)}</h1>\n"
        "<nav class=\"fw-nav\" aria-label=\"sections\"><a href=\"#explorer\">Explore the cells</a> · "
        "<a href=\"#report\">The full report</a></nav>\n"
        "<main id=\"explorer\" aria-label=\"explorer\">\n"
        "<noscript><p>The explorer needs JavaScript; the full report below does not.</p></noscript>\n"
        "</main>\n"
        "<section id=\"report\" aria-label=\"the full report\">\n<h2 class=\"fw-report-title\">The full report</h2>\n"
        f"{static}\n</section>\n"
        f"<script type=\"application/json\" id=\"{DATA_ID}\">{embedded_json(data)}</script>\n"
        f"<script>\n{asset('explorer.js')}</script>\n"
        "</body>\n</html>\n"
    )
