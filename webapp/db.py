"""The database: one table of predictions, an engine per process as the reset policy says, schema made once.

An ``init_app`` extension in the style of Flask's tutorial. What a forked worker does with an
engine its master made (``reset``, see forkwise.config.DB_RESET_POLICIES) is a setting, because
it is the database's own fork hazard: a pooled connection inherited by several processes shares
one socket (and one TLS session) among them.

- ``new-engine`` (the default): each process makes its own engine on first use; one inherited
  from the master is disposed with ``close=False`` first, so the parent's sockets stay open.
- ``dispose``: the same engine, its inherited pool dropped with ``engine.dispose(close=False)``
  in the child before first use (SQLAlchemy's documented recipe).
- ``nullpool``: no pool at all (``NullPool``): every use opens and closes its own connection.
- ``none``: the inherited engine and its pool used as they are: the hazard, on purpose.

Connections are pre-pinged (a restarted server's dead connections are replaced), and a database
that cannot be reached raises DatabaseUnavailable, which the app answers with a 503 and
Retry-After. The schema is created under a file lock, so workers booting together never race.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from flask import Flask
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, event, func, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from forkwise.config import DB_RESET_POLICIES, DEFAULT_DB_RESET
from forkwise.errors import ConfigError, DatabaseBusy, DatabaseUnavailable

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


def _sqlite_pragmas(busy_timeout_s: float) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    return on_connect


def first_line(exc: BaseException) -> str:
    """An error's message, first line only (drivers add SQL and hints below it)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Database:
    """Runs in every process of the app; `reset` decides what a forked process does with the engine
    it inherited (see the module's docstring). `application_name` labels PostgreSQL connections:
    the app's are counted in pg_stat_activity (forkwise.postgres.APP_NAME), a checker's are not."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0, lock_dir: Path | None = None,
                 reset: str = DEFAULT_DB_RESET, application_name: str = "forkwise"):
        if reset not in DB_RESET_POLICIES:
            raise ConfigError(f"database reset policy must be one of {', '.join(DB_RESET_POLICIES)}, got {reset!r}")
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.lock_dir = lock_dir
        self.reset = reset
        self.application_name = application_name
        self.is_sqlite = url.startswith("sqlite")
        if not self.is_sqlite:
            # Load the driver now, in whichever process builds the app and before any strategy imports
            # its ML runtime: TensorFlow's BoringSSL otherwise takes over the symbols of psycopg's own
            # OpenSSL, and its first TLS connection aborts the process ("free(): invalid pointer";
            # psycopg/psycopg#1097, keras-team/keras#22029).
            make_url(url).get_dialect().import_dbapi()
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._guard = threading.Lock()

    def init_app(self, app: Flask) -> None:
        """Register only: no connection is made here, since this may run in a master about to fork."""
        app.extensions["forkwise_db"] = self

    @property
    def engine(self) -> Engine:
        if self._engine_pid != os.getpid():
            with self._guard:
                if self._engine_pid != os.getpid():
                    self._engine = self._engine_for_this_process()
                    self._engine_pid = os.getpid()
        return self._engine

    def _engine_for_this_process(self) -> Engine:
        inherited = self._engine
        if inherited is None:
            return self._create_engine()
        if self.reset == "new-engine":
            inherited.dispose(close=False)  # forget the parent's pool without closing its sockets
            return self._create_engine()
        if self.reset == "dispose":
            inherited.dispose(close=False)
        return inherited  # dispose: a fresh pool; nullpool: nothing pooled; none: the parent's pool

    def _create_engine(self) -> Engine:
        kwargs: dict[str, Any]
        if self.is_sqlite:
            kwargs = {"connect_args": {"timeout": self.busy_timeout_s, "check_same_thread": False}}
        else:
            # libpq's connect_timeout is whole seconds: how long a request may wait for a connection.
            kwargs = {"pool_pre_ping": True,
                      "connect_args": {"application_name": self.application_name,
                                       "connect_timeout": max(1, round(self.busy_timeout_s))}}
        if self.reset == "nullpool":
            kwargs["poolclass"] = NullPool
        engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(engine, "connect", _sqlite_pragmas(self.busy_timeout_s))
        return engine

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Errors that mean "the database cannot serve this now" become typed 503 errors: a locked
        SQLite file, a server that is down, restarting or cut the connection. Anything else is a
        bug or a broken connection and propagates (the app answers 500 with its text)."""
        try:
            yield
        except DBAPIError as exc:
            text = first_line(exc)
            locked = any(w in text.lower() for w in ("locked", "busy"))
            if self.is_sqlite and isinstance(exc, OperationalError) and locked:
                raise DatabaseBusy("the database stayed locked; nothing was written, retry") from None
            if exc.connection_invalidated or (not self.is_sqlite and isinstance(exc, OperationalError)):
                raise DatabaseUnavailable(f"the database is unavailable ({text}); the request was not "
                                          f"acknowledged, retry") from exc
            raise

    def create_schema(self) -> None:
        """Create the table if it is missing, one process at a time."""
        with self._reachable():
            if self.lock_dir is None:
                metadata.create_all(self.engine)
                return
            with FileLock(str(self.lock_dir / "schema.lock"), timeout=60):
                metadata.create_all(self.engine)

    def touch(self) -> int:
        """What an app that preloads does before fork: make sure of the schema and run a query.
        Leaves a connection in this process's pool (unless the pool is a NullPool)."""
        self.create_schema()
        return self.count()

    def record(self, digests: list[str], outputs: list[list[float]], worker_pid: int,
               strategy: str) -> list[tuple[int, str]]:
        """Insert one row per instance in one transaction; returns (id, input digest) of each row as
        the database returned them, once committed: an answer read off another process's query
        shows up as digests of other inputs."""
        now = time.time()
        rows = [
            {"input_digest": d, "output": json.dumps(o), "worker_pid": worker_pid, "strategy": strategy,
             "created_at": now}
            # A strategy that answers too few rows is judged by the client (WRONG), not failed here.
            for d, o in zip(digests, outputs, strict=False)
        ]
        returning = insert(predictions).returning(predictions.c.id, predictions.c.input_digest,
                                                  sort_by_parameter_order=True)
        with self._reachable(), self.engine.begin() as conn:
            return [(row[0], row[1]) for row in conn.execute(returning, rows)]

    def outputs(self, ids: list[int]) -> dict[int, list[float]]:
        """Stored outputs by row id, for the ids that exist."""
        found: dict[int, list[float]] = {}
        with self._reachable(), self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(predictions.c.id, predictions.c.output).where(predictions.c.id.in_(chunk))
                found.update({row.id: json.loads(row.output) for row in conn.execute(query)})
        return found

    def last_id(self) -> int:
        """The highest row id so far (0 for an empty table): rows written later have higher ids."""
        with self._reachable(), self.engine.connect() as conn:
            return conn.execute(select(func.max(predictions.c.id))).scalar_one() or 0

    def sample_after(self, after_id: int, limit: int) -> list[tuple[str, list[float]]]:
        """(input digest, output) of up to `limit` rows with ids above `after_id`, spread evenly over them."""
        step = max(1, (self.last_id() - after_id) // max(1, limit))
        with self._reachable(), self.engine.connect() as conn:
            query = (select(predictions.c.input_digest, predictions.c.output)
                     .where(predictions.c.id > after_id, (predictions.c.id - after_id - 1) % step == 0)
                     .order_by(predictions.c.id).limit(limit))
            return [(row.input_digest, json.loads(row.output)) for row in conn.execute(query)]

    def count(self) -> int:
        with self._reachable(), self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(predictions)).scalar_one()

    def dispose(self) -> None:
        """Close this process's connections (the checker's, at the end of a cell)."""
        if self._engine is not None and self._engine_pid == os.getpid():
            self._engine.dispose()
