"""The report's Database section: the cells that ran on PostgreSQL or with non-default database settings.

For each: the verdict, the reset policy, whether the master queried before fork, the app's peak
connection count against its workers x threads (pool multiplication), what the clients saw, and
what the PostgreSQL server logged about broken sessions (which it logs even when pre-ping hid the
break from every client). Verdicts are the records' own (forkwise.matrix.verdicts); this only shows.
"""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.config import DEFAULT_DATABASE
from forkwise.matrix.analysis.ordering import cell_order, highest_level
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table, fmt_int
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.types import CellRecord

SERVER_LINES_SHOWN = 2


def database_cells(records: Sequence[CellRecord]) -> list[CellRecord]:
    """The cells whose database settings are not SQLite's defaults, in a stable order."""
    cells = [r for r in records if r.database_setting]
    return sorted(cells, key=lambda r: (r.scenario != STEADY, r.scenario, r.db_in_master, r.database,
                                        *cell_order(r), r.cell_id))


def clients_saw(record: CellRecord) -> str:
    """What the clients saw: the first finding that quotes the database, else the first finding."""
    if record.verdict.ok:
        return MISSING
    findings = record.evidence.findings
    quoted = [f for f in findings if "database" in f.lower()]
    return (quoted or list(findings) or [MISSING])[0][:200]


def server_logged(record: CellRecord) -> str:
    if record.database == DEFAULT_DATABASE:
        return MISSING
    return "; ".join(record.db_server_log[:SERVER_LINES_SHOWN]) or "nothing"


def top_rps(record: CellRecord) -> str:
    level = highest_level(record)
    return MISSING if level is None else f"c{level.concurrency}: {level.rps:,.0f}"


def database_row(record: CellRecord) -> tuple[str, ...]:
    return (
        record.cell_id, record.verdict.value, record.db_reset, "yes" if record.db_in_master else "no",
        f"{record.workers} x {record.threads}", fmt_int(record.db_connections_peak), top_rps(record),
        clients_saw(record), server_logged(record),
    )


def database_section(records: Sequence[CellRecord]) -> list[Block]:
    cells = database_cells(records)
    if not cells:
        return []
    servers = sorted({r.settings.get("database_server", "") for r in cells if r.database != DEFAULT_DATABASE} - {""})
    blocks: list[Block] = [Heading("Database"), Para(
        "Each PostgreSQL cell ran a server of its own" + (f" ({', '.join(servers)})" if servers else "") +
        ", reached over loopback TCP with TLS (postgresql) or its Unix socket (postgresql-unix). "
        "Reset: what each forked worker did with an engine its master made (new-engine: its own; dispose: "
        "dispose(close=False) after fork; nullpool: nothing pooled; none: the inherited pool). Peak: the app's "
        "connections at their peak (pg_stat_activity), against workers x threads. Server log: what PostgreSQL "
        "logged about broken sessions while the cell ran, seen even when pre-ping reconnected before any "
        "client got an error.")]
    blocks.append(Table(
        ("cell", "verdict", "reset", "master queried", "workers x threads", "peak connections", "top rps",
         "clients saw", "server log"),
        tuple(database_row(r) for r in cells)))
    return blocks
