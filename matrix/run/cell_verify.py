"""A cell's verification, in the cell process: K requests at a concurrency of at least the number
of workers, then larger ones until every worker has answered (or the boot deadline)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from forkwise.matrix.run.http import post_json
from forkwise.matrix.run.running import RunningCell
from forkwise.matrix.run.verification import Verification

BUSY_BODY_SHARE = 8  # the larger verification requests stay within this share of the body limit


def verify(run: RunningCell, v: Verification) -> None:
    """K requests at a concurrency of at least the number of workers; stop early once hung."""
    d = run.launched.deployment
    concurrency = max(4, d.workers * d.threads)
    hung = threading.Event()

    def one(i: int, size: int) -> None:
        if hung.is_set():
            return
        rows = [(i * 7 + j) % len(v.inputs) for j in range(size)]
        # A worker may still be loading its model (a lazy one, or one whose first request
        # imports the runtime): wait while the deployment computes, up to the cell's patience.
        reply = post_json(d.host, d.port, "/predict", v.payload(rows), run.cell.request_timeout_s,
                          keep_waiting=run.still_computing, ceiling_s=run.patience_s)
        if reply.kind == "timeout":
            v.note(f"a verification request: {reply.error}")
        elapsed = time.monotonic() - run.launched.group.started_at
        if v.check(reply, rows, elapsed) == "timeout" and v.kinds["timeout"] >= concurrency:
            hung.set()

    budget = run.cell.verify_requests
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: one(i, 1 + i % 3), range(budget)))
        # Until every worker has answered: a fast app lets one worker take every connection,
        # and a worker may still be loading the model when another already answers. Larger
        # requests keep each worker busy longer, so concurrent ones reach the others. Bounded
        # by the boot deadline: a worker that never answers by then makes the cell WRONG.
        deadline = run.launched.group.started_at + run.cell.boot_timeout_s
        busy, round_no = v.busy_rows(d.settings.max_body_bytes // BUSY_BODY_SHARE), 1
        while not hung.is_set() and len(v.workers_seen) < d.workers and time.monotonic() < deadline:
            start = budget * round_no
            list(pool.map(lambda i: one(i, busy), range(start, start + budget)))
            round_no += 1
            time.sleep(0.2)
    if len(v.workers_seen) == d.workers:
        run.timings["warm_all_s"] = max(v.workers_seen.values())
