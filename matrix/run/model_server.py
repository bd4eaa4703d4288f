"""A cell's model-server stats: what every model-server process of the deployment wrote as it served
and as it stopped (forkwise.modelserver.stats), read once the deployment has stopped, as the record's."""

from __future__ import annotations

from forkwise.config import AppSettings
from forkwise.matrix.records.types import ModelServerStats
from forkwise.modelserver.stats import Stats, read_stats
from forkwise.strategies.base import Strategy


def model_server_stats(strategy: type[Strategy], settings: AppSettings) -> ModelServerStats | None:
    """The deployment's model-server processes, added up; None without a model server or a stats file."""
    directory = strategy.model_server_dir(settings)
    if directory is None or not directory.is_dir():
        return None
    parts = read_stats(directory)
    if not parts:
        return None
    return as_record(Stats.merged(parts), processes=len(parts))


def as_record(stats: Stats, processes: int) -> ModelServerStats:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1e3, 3)

    waited = stats.waited_requests
    return ModelServerStats(
        calls=stats.batches, rows=stats.rows, requests=stats.requests, direct=stats.direct,
        padding_rows=stats.padded_rows, expired=stats.expired, largest_call=stats.largest_batch,
        calls_by_rows=tuple(stats.batch_sizes),
        queue_wait_mean_ms=ms(stats.wait_sum_s / waited) if waited else None,
        queue_wait_p50_ms=ms(stats.wait_percentile_s(50)), queue_wait_p99_ms=ms(stats.wait_percentile_s(99)),
        processes=processes,
    )
