"""Watching the app's connections to forkwise's own PostgreSQL (forkwise.postgres) while a deployment runs.

Over the superuser's own connection (the Unix socket, to the admin database), so that the watch
is never counted among the app's.
"""

from __future__ import annotations

import threading
from typing import Any

from forkwise.postgres import APP_NAME, DATABASE, PostgresServer


def app_connections(conn: Any) -> int:
    """The app's connections to its database now (pg_stat_activity), forkwise's own excluded;
    `conn`: an admin connection."""
    return conn.execute("select count(*) from pg_stat_activity where datname = %s and application_name = %s",
                        (DATABASE, APP_NAME)).fetchone()[0]


class ConnectionPeak:
    """Samples the app's connection count in a thread while in use; `peak` is the highest seen.

    Pool multiplication (workers x pool size, plus whatever the master holds) shows up here. A
    sample that fails (the server restarting) is skipped. On leaving, `log_highlights` holds the
    server log's telling lines up to then (before the deployment stops and its sessions end).
    """

    def __init__(self, server: PostgresServer, interval_s: float = 0.1):
        self.server, self.interval_s = server, interval_s
        self.peak: int | None = None
        self.samples = 0
        self.log_highlights: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="forkwise-pg-connections", daemon=True)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.log_highlights = self.server.log_highlights()

    def _sample(self) -> None:
        import psycopg

        conn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self.server.connect_admin()
                count = app_connections(conn)
                self.peak = count if self.peak is None else max(self.peak, count)
                self.samples += 1
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None  # the server is restarting or stopping: sample again next time
            self._stop.wait(self.interval_s)
        if conn is not None:
            conn.close()
