"""README.md is the front door and docs/ holds the manual: README.md stays short, and every relative link
of README.md and of each page under docs/ resolves inside the repository, its #anchor naming a heading of
the target page as GitHub spells it."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 250


def pages() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans: links there are not links."""
    text = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"(`+)[^`].*?\1", "", text, flags=re.S)


def link_targets(text: str) -> list[str]:
    """Targets of inline links and images, `[text](target "title")`, and of reference definitions."""
    text = prose(text)
    inline = re.findall(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    references = re.findall(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, re.M)
    return inline + references


def is_external(target: str) -> bool:
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings (ATX and setext), repeats numbered -1, -2, ..."""
    lines = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", "", text, flags=re.M | re.S).splitlines()
    headings = []
    for i, line in enumerate(lines):
        atx = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if atx:
            headings.append(atx.group(1))
        elif (i > 0 and lines[i - 1].strip() and not lines[i - 1].lstrip().startswith(("|", "#", "-", "*"))
              and re.match(r"^ {0,3}(=+|-+)\s*$", line)):
            headings.append(lines[i - 1])
    seen: dict[str, int] = {}
    result = set()
    for heading in headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def problems(page: Path) -> list[str]:
    """Every relative link of the page that leaves the repository, is missing, or names no heading."""
    found = []
    for target in link_targets(page.read_text()):
        if not target:
            found.append("an empty link")
            continue
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path)
        if path.startswith("/"):
            found.append(f"{target}: absolute, not relative to the page")
            continue
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            found.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            found.append(f"{target}: no such file")
            continue
        if anchor:
            if resolved.suffix != ".md":
                found.append(f"{target}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(resolved.read_text()):
                found.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    return found


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page):
    found = problems(page)
    assert not found, f"{page.relative_to(ROOT)}: " + "; ".join(found)


def test_the_index_lists_every_page():
    index = DOCS / "README.md"
    listed = {(DOCS / unquote(t.partition("#")[0])).resolve() for t in link_targets(index.read_text())
              if not is_external(t)}
    missing = [p.relative_to(ROOT) for p in sorted(DOCS.rglob("*.md")) if p != index and p not in listed]
    assert missing == [], f"docs/README.md does not list {missing}"


def test_pages_name_matrix_modules_rather_than_link_their_files():
    """matrix/ is being reorganised into sub-packages: pages name its modules in prose."""
    for page in pages():
        for target in link_targets(page.read_text()):
            if not is_external(target):
                resolved = (page.parent / unquote(target.partition("#")[0])).resolve()
                assert not resolved.is_relative_to(ROOT / "matrix"), f"{page.relative_to(ROOT)} links {target}"


def test_the_checker_reads_links_and_headings_as_github_does():
    text = ("# How a HANG is decided\n## Trust boundaries: what it does not\n## Notes\n## Notes\n"
            "Set up\n---\n```sh\n# not a heading\n[x](nowhere.md)\n```\n"
            "See [a](docs/x.md#y), `[b](code.md)`, ![c](img.png \"t\") and [d](https://example.com).\n"
            "[ref]: <docs/ref.md>\n")
    assert anchors(text) == {"how-a-hang-is-decided", "trust-boundaries-what-it-does-not", "notes", "notes-1",
                             "set-up"}
    assert link_targets(text) == ["docs/x.md#y", "img.png", "https://example.com", "docs/ref.md"]
    assert slug("The `db_reset` policies") == "the-db_reset-policies"
    assert slug("[Verdicts](verdicts.md), and how") == "verdicts-and-how"
    assert len(link_targets((ROOT / "README.md").read_text())) > 10  # the check is not vacuous
