"""The database: one table of predictions, one engine per process, schema made once.

An ``init_app`` extension in the style of Flask's tutorial. The engine is created
lazily in the process that uses it and re-created after a fork (the inherited one is
disposed with ``close=False``), so no pooled connection ever crosses a fork. The
schema is created under a file lock, so workers booting together never race.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from filelock import FileLock
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from forkwise.errors import DatabaseBusy

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("input_digest", String(64), nullable=False),
    Column("output", Text, nullable=False),  # JSON list of float32 values
    Column("worker_pid", Integer, nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)


def _sqlite_pragmas(busy_timeout_s: float):
    def on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    return on_connect


class Database:
    """Runs in every process of the app; each process gets its own engine."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0, lock_dir: Path | None = None):
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.lock_dir = lock_dir
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._guard = threading.Lock()

    def init_app(self, app) -> None:
        app.extensions["forkwise_db"] = self
        self.create_schema()

    @property
    def engine(self) -> Engine:
        if self._engine_pid != os.getpid():
            with self._guard:
                if self._engine_pid != os.getpid():
                    if self._engine is not None:
                        # Inherited across fork: forget the parent's pool without closing its sockets.
                        self._engine.dispose(close=False)
                    self._engine = self._create_engine()
                    self._engine_pid = os.getpid()
        return self._engine

    def _create_engine(self) -> Engine:
        is_sqlite = self.url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": self.busy_timeout_s, "check_same_thread": False}} if is_sqlite else {}
        engine = create_engine(self.url, **kwargs)
        if is_sqlite:
            event.listen(engine, "connect", _sqlite_pragmas(self.busy_timeout_s))
        return engine

    def create_schema(self) -> None:
        """Create the table if it is missing, one process at a time."""
        if self.lock_dir is None:
            metadata.create_all(self.engine)
            return
        with FileLock(str(self.lock_dir / "schema.lock"), timeout=60):
            metadata.create_all(self.engine)

    def record(self, digests: list[str], outputs: list[list[float]], worker_pid: int, strategy: str) -> list[int]:
        """Insert one row per instance in one transaction; returns their ids once committed."""
        now = time.time()
        rows = [
            {"input_digest": d, "output": json.dumps(o), "worker_pid": worker_pid, "strategy": strategy, "created_at": now}
            for d, o in zip(digests, outputs)
        ]
        try:
            with self.engine.begin() as conn:
                result = conn.execute(insert(predictions).returning(predictions.c.id, sort_by_parameter_order=True), rows)
                return [row[0] for row in result]
        except OperationalError as exc:
            if "locked" in str(exc.orig).lower() or "busy" in str(exc.orig).lower():
                raise DatabaseBusy("the database stayed locked; nothing was written, retry") from None
            raise

    def outputs(self, ids: list[int]) -> dict[int, list[float]]:
        """Stored outputs by row id, for the ids that exist."""
        found: dict[int, list[float]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(predictions.c.id, predictions.c.output).where(predictions.c.id.in_(chunk))
                found.update({row.id: json.loads(row.output) for row in conn.execute(query)})
        return found

    def last_id(self) -> int:
        """The highest row id so far (0 for an empty table): rows written later have higher ids."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(predictions.c.id))).scalar_one() or 0

    def sample_after(self, after_id: int, limit: int) -> list[tuple[str, list[float]]]:
        """(input digest, output) of up to `limit` rows with ids above `after_id`, spread evenly over them."""
        step = max(1, (self.last_id() - after_id) // max(1, limit))
        with self.engine.connect() as conn:
            query = (select(predictions.c.input_digest, predictions.c.output)
                     .where(predictions.c.id > after_id, (predictions.c.id - after_id - 1) % step == 0)
                     .order_by(predictions.c.id).limit(limit))
            return [(row.input_digest, json.loads(row.output)) for row in conn.execute(query)]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(predictions)).scalar_one()
