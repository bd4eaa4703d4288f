"""The report's Model server section: what the model server of each cell that has one did (the
record's model_server, forkwise.matrix.records.types.ModelServerStats): its calls, how many rows
each carried, how long requests queued for one, the padding and the requests failed past the deadline."""

from __future__ import annotations

from collections.abc import Sequence

from forkwise.matrix.analysis.ordering import cell_order
from forkwise.matrix.publish.database_report import top_rps
from forkwise.matrix.publish.document import MISSING, Block, Heading, Para, Table, fmt_fixed, fmt_ms
from forkwise.matrix.records.axes import STEADY
from forkwise.matrix.records.types import CellRecord


def rows_bucket_label(bucket: int) -> str:
    """A power-of-two bucket of call sizes: 0 -> '1', 1 -> '2-3', 2 -> '4-7', ..."""
    low, high = 2**bucket, 2 ** (bucket + 1) - 1
    return str(low) if low == high else f"{low}-{high}"


def histogram_text(calls_by_rows: Sequence[int]) -> str:
    """Calls per bucket of rows, the empty buckets left out: '1:120 2-3:40 4-7:300'."""
    text = " ".join(f"{rows_bucket_label(i)}:{n}" for i, n in enumerate(calls_by_rows) if n)
    return text or MISSING


def model_server_row(record: CellRecord) -> tuple[str, ...]:
    served = record.model_server
    assert served is not None, "only the cells whose model server reported get a row"
    return (
        record.cell_id, top_rps(record), f"{served.calls:,}", f"{served.rows:,}", fmt_fixed(1)(served.rows_per_call),
        f"{served.largest_call:,}", histogram_text(served.calls_by_rows), fmt_ms(served.queue_wait_p50_ms),
        fmt_ms(served.queue_wait_p99_ms), f"{served.padding_rows:,}", f"{served.expired:,}",
    )


def model_server_section(records: Sequence[CellRecord]) -> list[Block]:
    cells = sorted((r for r in records if r.model_server is not None),
                   key=lambda r: (r.scenario != STEADY, r.scenario, *cell_order(r), r.cell_id))
    if not cells:
        return []
    return [
        Heading("Model server"),
        Para("What the model server of each cell that has one did over the whole cell (verification, warm-up "
             "and every load level; every model-server process of the deployment, restarts included). Calls: "
             "model calls, each of one or more requests' rows; histogram: calls by rows per call, in "
             "power-of-two buckets; queue wait: from a request's arrival to its call, in log buckets (a "
             "percentile is at most 19% above the true one); padding: zero rows added to reach an allowed "
             "batch size; expired: requests failed because they waited past the workers' timeout."),
        Table(("cell", "top rps", "calls", "rows", "rows per call", "largest call", "calls by rows",
               "queue wait p50 ms", "queue wait p99 ms", "padding rows", "expired"),
              tuple(model_server_row(r) for r in cells)),
    ]
