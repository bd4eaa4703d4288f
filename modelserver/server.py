"""The model-serving process: loads the model once, answers rows over a Unix socket.

Runs in a fresh interpreter started by the supervisor, never forked from a process
that holds an initialised runtime. Connections are read by one thread each; a single
inference thread takes queued requests and, when ``max_batch`` > 1, merges the rows of
requests from all workers into one call: a batch closes at ``max_batch`` rows or after
``max_wait_ms``, whichever comes first, and each answer goes back to its own request.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forkwise.model.runtime import load_predictor
from forkwise.model.spec import ModelSpec
from forkwise.modelserver import protocol
from forkwise.procs import die_with_parent


@dataclass
class Job:
    rows: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    answer: np.ndarray | None = None
    failure: str | None = None


@dataclass
class Stats:
    """Batches and rows served: the model server prints them as it stops (evidence of batching)."""

    batches: int = 0
    rows: int = 0
    requests: int = 0

    def line(self) -> str:
        mean = self.rows / self.batches if self.batches else 0.0
        return (f"forkwise model server {os.getpid()}: {self.requests} requests, {self.rows} rows "
                f"in {self.batches} calls ({mean:.1f} rows a call)")


STATS = Stats()


def inference_loop(predictor, jobs: "queue.SimpleQueue[Job]", max_batch: int, max_wait_s: float) -> None:
    while True:
        batch = [jobs.get()]
        rows = len(batch[0].rows)
        deadline = time.monotonic() + max_wait_s
        while rows < max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                job = jobs.get(timeout=remaining)
            except queue.Empty:
                break
            batch.append(job)
            rows += len(job.rows)
        try:
            stacked = batch[0].rows if len(batch) == 1 else np.concatenate([j.rows for j in batch])
            out = predictor(stacked).reshape(len(stacked), -1)
            STATS.batches += 1
            STATS.rows += len(stacked)
            STATS.requests += len(batch)
            start = 0
            for job in batch:
                job.answer = out[start : start + len(job.rows)]
                start += len(job.rows)
        except Exception as exc:  # the failure is handed to every waiting request, never dropped
            for job in batch:
                job.failure = f"{type(exc).__name__}: {exc}"
        for job in batch:
            job.done.set()


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def handle(conn: socket.socket, jobs: "queue.SimpleQueue[Job]", width: int) -> None:
    with conn:
        if peer_uid(conn) != os.getuid():
            return  # only the deployment's own user may use the model
        while True:
            try:
                kind, rows = protocol.recv_frame(conn)
            except (ConnectionError, OSError, protocol.ProtocolError):
                return
            if kind != protocol.REQUEST or rows.shape[1] != width:
                protocol.send_failure(conn, f"expected a request of rows of width {width}")
                continue
            job = Job(rows)
            jobs.put(job)
            job.done.wait()
            if job.failure is not None:
                protocol.send_failure(conn, job.failure)
            else:
                protocol.send_array(conn, protocol.ANSWER, job.answer)


def _stop(signum, frame) -> None:
    print(STATS.line(), file=sys.stderr, flush=True)
    os._exit(0)  # daemon threads may be inside a model call: do not wait for them


def serve(socket_path: Path, spec_path: Path, max_batch: int, max_wait_ms: float) -> None:
    die_with_parent()
    signal.signal(signal.SIGTERM, _stop)
    spec = ModelSpec.load(spec_path)
    predictor = load_predictor(spec.model_path)
    predictor(np.zeros((1, *spec.input_shape), np.float32))  # warm: compile before the first request
    width = int(np.prod(spec.input_shape))
    jobs: "queue.SimpleQueue[Job]" = queue.SimpleQueue()
    threading.Thread(
        target=inference_loop, args=(predictor, jobs, max_batch, max_wait_ms / 1000), daemon=True
    ).start()
    # Bind under a temporary name, then rename: clients see the socket only once it accepts.
    tmp = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(128)
    os.replace(tmp, socket_path)
    print(f"forkwise model server {os.getpid()}: ready on {socket_path} (max_batch={max_batch})", file=sys.stderr, flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, jobs, width), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m forkwise.modelserver.server")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=1.0)
    args = parser.parse_args()
    serve(args.socket, args.spec, args.max_batch, args.max_wait_ms)


if __name__ == "__main__":
    main()
