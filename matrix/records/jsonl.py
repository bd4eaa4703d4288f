"""Record files: one JSON record a line (records.jsonl), appended and flushed as each cell ends, so
an interrupted run keeps every launch it finished; results.json is read back the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from forkwise.errors import RecordError
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
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        yield CellRecord.from_dict(data)
