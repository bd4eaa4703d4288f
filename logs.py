"""Reading a log for what matters: its telling lines, each once, however often it recurs."""

from __future__ import annotations

import re
from collections import Counter


def distinct_lines(log_text: str, telling: re.Pattern, keep: int, strip: re.Pattern | None = None) -> tuple[str, ...]:
    """The first `keep` distinct lines of a log that match `telling`, each once, with how often it
    recurred; `strip` (a prefix such as a time and pid) is removed first. Lines that differ only in
    numbers (pids, times, addresses) count as the same line."""
    order: list[str] = []
    first: dict[str, str] = {}
    count: Counter[str] = Counter()
    for raw in log_text.splitlines():
        line = (strip.sub("", raw) if strip else raw).strip()
        if not telling.search(line):
            continue
        key = re.sub(r"\d+", "#", line)
        if key not in first:
            first[key] = line[:300]
            order.append(key)
        count[key] += 1
    return tuple(first[k] + (f"  (x{count[k]})" if count[k] > 1 else "") for k in order[:keep])
