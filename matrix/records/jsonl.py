"""Record files: one JSON record a line (records.jsonl), appended and flushed as each cell ends, so
an interrupted run keeps every launch it finished; results.json is read back the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forkwise.errors import ForkwiseError, RecordError
from forkwise.matrix.records.types import CellRecord

RECORDS_FILE = "records.jsonl"


def append_record(path: Path, record: CellRecord) -> None:
    """Append one record and flush it to disk at once, so an interrupted run keeps it."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()


def read_records(path: Path) -> Iterator[CellRecord]:
    """Read a records file (JSONL) or a results.json (a list under "records")."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        doc = json.loads(text)
        for item in doc.get("records", []):
            yield CellRecord.from_dict(item)
        return
    for _, data in json_lines(path, text, RecordError):
        yield CellRecord.from_dict(data)


def json_lines(path: Path, text: str, error: type[ForkwiseError]) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON-lines file's `text`; a line that is
    not JSON is an `error` naming the file and the line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        yield lineno, value
