"""What a model server did: calls, rows, the size of each call and how long requests queued.

The counts are updated from the inference thread and from every connection's thread, so every
update takes the lock. A serving model server writes them as one JSON file next to its socket
(``stats-<pid>.json``), each second while they change and once more as it stops (``StatsWriter``):
a server killed without warning still leaves its latest second, and each restart of it (the
supervisor's) a file of its own. ``read_stats`` reads every file in the directory.

Call sizes are counted in power-of-two buckets (bucket i: 2**i .. 2**(i+1)-1 rows); queue waits in
log buckets of a quarter of a doubling (bucket i: waits up to 2**(i/4) microseconds), so a
percentile read from them is at most 19% above the true one, and buckets of several servers add up.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WAIT_STEPS_PER_DOUBLING = 4
WRITE_EVERY_S = 1.0
STATS_GLOB = "stats-*.json"


def size_bucket(rows: int) -> int:
    """The power-of-two bucket of a call of `rows` rows (1: 0, 2-3: 1, 4-7: 2, ...)."""
    return max(rows, 1).bit_length() - 1


def wait_bucket(seconds: float) -> int:
    """The log bucket of a wait: the smallest i with the wait at most 2**(i/4) microseconds."""
    micros = seconds * 1e6
    return 0 if micros <= 1.0 else math.ceil(math.log2(micros) * WAIT_STEPS_PER_DOUBLING)


def wait_bucket_ceiling_s(bucket: int) -> float:
    return 2 ** (bucket / WAIT_STEPS_PER_DOUBLING) / 1e6


@dataclass
class Stats:
    """Calls and rows served, call sizes and queue waits (thread-safe: update through the methods)."""

    batches: int = 0  # model calls (answer_batch), each of one or more requests
    rows: int = 0
    requests: int = 0
    padded_rows: int = 0  # zero rows added to reach an allowed batch size
    direct: int = 0  # calls run at once on the request's own thread (the model was idle)
    expired: int = 0  # requests answered with a failure: they waited past the deadline
    largest_batch: int = 0  # rows of the largest call
    batch_sizes: list[int] = field(default_factory=list)  # calls per power-of-two bucket of rows
    waits: dict[int, int] = field(default_factory=dict)  # requests per log bucket of queue wait
    wait_sum_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def called(self, rows: int, requests: int) -> None:
        with self._lock:
            self.batches += 1
            self.rows += rows
            self.requests += requests
            self.largest_batch = max(self.largest_batch, rows)
            bucket = size_bucket(rows)
            self.batch_sizes += [0] * (bucket + 1 - len(self.batch_sizes))
            self.batch_sizes[bucket] += 1

    def padded(self, rows: int) -> None:
        with self._lock:
            self.padded_rows += rows

    def ran_direct(self) -> None:
        with self._lock:
            self.direct += 1

    def expired_requests(self, count: int) -> None:
        with self._lock:
            self.expired += count

    def waited(self, seconds: Iterable[float]) -> None:
        """Requests that left the queue (to be computed, or failed past the deadline) after these waits."""
        with self._lock:
            for wait in seconds:
                bucket = wait_bucket(max(0.0, wait))
                self.waits[bucket] = self.waits.get(bucket, 0) + 1
                self.wait_sum_s += max(0.0, wait)

    @property
    def waited_requests(self) -> int:
        return sum(self.waits.values())

    def wait_percentile_s(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the queue waits: its bucket's ceiling; None with no wait."""
        total = self.waited_requests
        if not total:
            return None
        rank, seen = max(1, math.ceil(total * q / 100)), 0
        for bucket in sorted(self.waits):
            seen += self.waits[bucket]
            if seen >= rank:
                return wait_bucket_ceiling_s(bucket)
        raise AssertionError("the rank is at most the number of waits")

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"batches": self.batches, "rows": self.rows, "requests": self.requests,
                    "padded_rows": self.padded_rows, "direct": self.direct, "expired": self.expired,
                    "largest_batch": self.largest_batch, "batch_sizes": list(self.batch_sizes),
                    "waits": {str(k): v for k, v in self.waits.items()}, "wait_sum_s": self.wait_sum_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(**{**data, "batch_sizes": list(data["batch_sizes"]),
                      "waits": {int(k): int(v) for k, v in data["waits"].items()}})

    @classmethod
    def merged(cls, parts: Iterable[Stats]) -> Stats:
        """The stats of several model-server processes (restarts, or one per worker), added up."""
        total = cls()
        for part in parts:
            for name in ("batches", "rows", "requests", "padded_rows", "direct", "expired", "wait_sum_s"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.largest_batch = max(total.largest_batch, part.largest_batch)
            width = max(len(total.batch_sizes), len(part.batch_sizes))
            total.batch_sizes = [a + b for a, b in zip(_padded(total.batch_sizes, width),
                                                       _padded(part.batch_sizes, width), strict=True)]
            for bucket, count in part.waits.items():
                total.waits[bucket] = total.waits.get(bucket, 0) + count
        return total

    def line(self) -> str:
        mean = self.rows / self.batches if self.batches else 0.0
        return (f"forkwise model server {os.getpid()}: {self.requests} requests, {self.rows} rows "
                f"in {self.batches} calls ({mean:.1f} rows a call, {self.direct} run at once, "
                f"{self.padded_rows} padding rows, {self.expired} past the deadline)")


def _padded(counts: list[int], width: int) -> list[int]:
    return counts + [0] * (width - len(counts))


def stats_path(directory: Path, pid: int) -> Path:
    return directory / f"stats-{pid}.json"


def write_stats(snapshot: dict[str, Any], path: Path) -> None:
    """Atomically: a reader sees the previous file or this one, never half of one. The temporary
    name is the writing thread's own (the writer's thread and the stopping signal handler may race)."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(snapshot))
    os.replace(tmp, path)


def read_stats(directory: Path) -> list[Stats]:
    """The stats of every model-server process that wrote some in `directory` (Stats.merged adds them up)."""
    return [Stats.from_dict(json.loads(p.read_text())) for p in sorted(directory.glob(STATS_GLOB))]


class StatsWriter:
    """Writes a server's stats to `path` each WRITE_EVERY_S while they change (a daemon thread)."""

    def __init__(self, stats: Stats, path: Path):
        self.stats, self.path = stats, path
        self._written: dict[str, Any] | None = None

    def write_now(self) -> None:
        snapshot = self.stats.to_dict()
        if snapshot != self._written:
            write_stats(snapshot, self.path)
            self._written = snapshot

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.write_now()
                time.sleep(WRITE_EVERY_S)

        threading.Thread(target=loop, name="stats-writer", daemon=True).start()
