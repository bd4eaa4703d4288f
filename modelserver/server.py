"""The model-serving process: loads the model once, answers rows over a Unix socket.

Runs in a fresh interpreter started by the supervisor, never forked from a process
that holds an initialised runtime. Connections are read by one thread each. One model
call runs at a time, through a ``Batcher``:

- a request that finds the model idle and nobody waiting runs at once, on its own
  connection's thread, which sends the answer back (no hand-off, no window);
- otherwise it is queued, and the inference thread merges the rows of queued requests
  from all workers into one call (when ``max_batch`` > 1) and sends each answer back on
  its own connection. It waits for more rows only while requests arrive faster than a
  call takes: a batch that could run is held at most ``max_wait_ms``, and never longer
  than its call would take; a request that waited past the deadline (the workers' own
  timeout) is answered with a failure, never computed late;
- every call is padded up to one of a few fixed sizes (``allowed_batch_sizes``), each
  compiled and warmed before the socket exists, so no request waits on a compilation.

What it did (calls, their sizes, queue waits) it writes next to its socket each second and as it
stops (``stats``), for whoever runs the deployment to read.

Rows arrive flat (``protocol``); the server gives them the model's input shape from the
spec before any call, so a model of any input rank is served, batched or not.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np

from forkwise.config import DEFAULT_BATCH_SIZES, allowed_batch_sizes
from forkwise.model.runtime import load_predictor
from forkwise.model.spec import ModelSpec
from forkwise.modelserver import protocol
from forkwise.modelserver.stats import Stats, StatsWriter, stats_path
from forkwise.procs import die_with_parent

# What the server calls: rows in, rows out (a model.runtime.Predictor, or any such function).
Model = Callable[[np.ndarray], np.ndarray]


@dataclass(eq=False)  # a job is itself: compared by identity
class Job:
    instances: np.ndarray  # (n, *input_shape)
    # Called with the job once it is answered (or failed), on the thread that answered it: the
    # connection's own thread, or the inference thread. None: the caller waits on `done`.
    reply: Callable[[Job], None] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    answer: np.ndarray | None = None  # (n, output width): one flat row per instance
    failure: str | None = None
    arrived_at: float = field(default_factory=time.monotonic)

    def finish(self) -> None:
        if self.reply is not None:
            self.reply(self)
        self.done.set()


# Put on the job queue, ends the inference loop (the owner of the loop's thread stops it).
STOP = None


STATS = Stats()
# Writes STATS next to the socket while the server serves; the stop handler writes them a last time.
STATS_WRITERS: list[StatsWriter] = []


class Pace:
    """How fast requests arrive, how often they find the model busy, and how long a call of each
    size takes (moving averages)."""

    WEIGHT = 0.2  # of the newest observation

    def __init__(self, call_s: dict[int, float] | None = None):
        self.gap_s = math.inf  # between consecutive arrivals; none seen yet: as if idle
        self.queued = 0.0  # the share of arrivals that found the model busy (or others waiting)
        self.call_s = dict(call_s or {})
        self._last: float | None = None

    def arrived(self, at: float, queued: bool = False) -> None:
        if self._last is not None:
            gap = max(0.0, at - self._last)
            self.gap_s = gap if math.isinf(self.gap_s) else self.gap_s + self.WEIGHT * (gap - self.gap_s)
        self._last = at
        self.queued += self.WEIGHT * (float(queued) - self.queued)

    def served(self, size: int, seconds: float) -> None:
        old = self.call_s.get(size)
        self.call_s[size] = seconds if old is None else old + self.WEIGHT * (seconds - old)

    def call_time(self, size: int) -> float:
        """A call of `size` rows; unmeasured: that of the nearest size measured, 0 when none is."""
        if size in self.call_s:
            return self.call_s[size]
        if not self.call_s:
            return 0.0
        return self.call_s[min(self.call_s, key=lambda s: abs(s - size))]

    def busy(self, rows: int) -> bool:
        """Requests come faster than the model serves them: on average more than one during a call
        of `rows` rows, or most of them find it busy (clients that send together after each answer
        do both). A lone client's requests never find it busy: nobody comes while it waits."""
        return self.gap_s < self.call_time(rows) or self.queued > 0.5


def pad_plan(rows: int, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """(rows, padded size) of each call for `rows` rows: one call padded up to the smallest allowed
    size that holds them, or calls of the largest size and one for the rest. No sizes: one call."""
    if not sizes:
        return [(rows, rows)]
    plan = []
    while rows > sizes[-1]:
        plan.append((sizes[-1], sizes[-1]))
        rows -= sizes[-1]
    if rows:
        plan.append((rows, next(s for s in sizes if s >= rows)))
    return plan


def call_padded(predictor: Model, instances: np.ndarray, sizes: tuple[int, ...], pace: Pace | None = None,
                stats: Stats = STATS) -> np.ndarray:
    """The model's answer for `instances`, computed in calls of the allowed sizes; the answers of
    padding rows are dropped. One flat row per instance."""
    answers, start = [], 0
    for rows, size in pad_plan(len(instances), sizes):
        part = instances[start : start + rows]
        if size > rows:
            part = np.concatenate([part, np.zeros((size - rows, *part.shape[1:]), part.dtype)])
        began = time.perf_counter()
        out = np.asarray(predictor(part))
        if pace is not None:
            pace.served(size, time.perf_counter() - began)
        if len(out) != size:
            raise ValueError(f"the model answered {len(out)} rows for {size} instances")
        answers.append(out[:rows].reshape(rows, -1))
        stats.padded(size - rows)
        start += rows
    return answers[0] if len(answers) == 1 else np.concatenate(answers)


def answer_batch(predictor: Model, batch: list[Job], sizes: tuple[int, ...] = (), pace: Pace | None = None,
                 stats: Stats = STATS) -> None:
    """The model's calls for the batch; each job gets its own rows of the answer, or the failure."""
    try:
        stacked = batch[0].instances if len(batch) == 1 else np.concatenate([j.instances for j in batch])
        out = call_padded(predictor, stacked, sizes, pace, stats)
        stats.called(len(stacked), len(batch))
        start = 0
        for job in batch:
            job.answer = out[start : start + len(job.instances)]
            start += len(job.instances)
    except Exception as exc:  # the failure is handed to every waiting request, never dropped
        for job in batch:
            job.failure = f"{type(exc).__name__}: {exc}"
    for job in batch:
        job.finish()


class Batcher:
    """One model call at a time: at once on the request's thread when the model is idle and nobody
    waits, else from the queue, batched, by the inference thread (``run``)."""

    def __init__(self, predictor: Model, max_batch: int, max_wait_s: float, sizes: tuple[int, ...] = (),
                 deadline_s: float = math.inf, pace: Pace | None = None, stats: Stats = STATS,
                 jobs: queue.SimpleQueue[Job | None] | None = None):
        self.predictor, self.max_batch, self.max_wait_s = predictor, max_batch, max_wait_s
        self.sizes, self.deadline_s = sizes, deadline_s
        self.pace, self.stats = pace or Pace(), stats
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue() if jobs is None else jobs
        self._model = threading.Lock()  # held by whoever runs a call
        self._state = threading.Lock()  # guards _waiting and the pace of arrivals
        self._waiting = 0  # jobs queued or taken by the inference thread, not answered yet

    def submit(self, job: Job) -> None:
        """On the request's thread: answers it at once, or queues it for the inference thread, which
        answers it (job.reply) while this thread goes back to its connection."""
        with self._state:
            alone = self._waiting == 0 and self._model.acquire(blocking=False)
            self.pace.arrived(job.arrived_at, queued=not alone)
            if not alone:
                self._waiting += 1
        if alone:
            try:
                self.stats.ran_direct()
                self.stats.waited([time.monotonic() - job.arrived_at])
                answer_batch(self.predictor, [job], self.sizes, self.pace, self.stats)
            finally:
                self._model.release()
        else:
            self.jobs.put(job)

    def run(self) -> None:
        """The inference thread: take queued jobs until STOP, one batch per call."""
        while True:
            first = self.jobs.get()
            if first is STOP:
                return
            with self._model:
                batch, stop = self.collect(first)
                self.answer(batch)
            with self._state:
                self._waiting -= len(batch)
            if stop:
                return

    def collect(self, first: Job) -> tuple[list[Job], bool]:
        """Jobs for one call: all queued ones up to max_batch rows; then more only while requests
        arrive faster than a call takes. The batch could run now (the model is ours): it is held at
        most max_wait past now, and never longer than the call itself would take (a call could run
        meanwhile). True: STOP was taken."""
        batch, rows = [first], len(first.instances)
        could_run = time.monotonic()
        while rows < self.max_batch:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                wait = could_run + min(self.max_wait_s, self.pace.call_time(rows)) - time.monotonic()
                if wait <= 0 or not self.pace.busy(rows):
                    break
                try:
                    job = self.jobs.get(timeout=wait)
                except queue.Empty:
                    break
            if job is STOP:
                return batch, True
            batch.append(job)
            rows += len(job.instances)
        return batch, False

    def answer(self, batch: list[Job]) -> None:
        """Fail the jobs that waited past the deadline (their worker gave up: 503), compute the rest."""
        now = time.monotonic()
        late = [j for j in batch if now - j.arrived_at > self.deadline_s]
        self.stats.waited(now - j.arrived_at for j in batch)
        for job in late:
            job.failure = (f"the request waited {now - job.arrived_at:.1f} s in the model server's queue, "
                           f"past its {self.deadline_s:g} s deadline")
            job.finish()
        self.stats.expired_requests(len(late))
        live = [j for j in batch if j not in late] if late else batch
        if live:
            answer_batch(self.predictor, live, self.sizes, self.pace, self.stats)


def inference_loop(predictor: Model, jobs: queue.SimpleQueue[Job | None], max_batch: int, max_wait_s: float) -> None:
    """Answer the jobs put on `jobs` until STOP (a Batcher's inference thread on a given queue)."""
    Batcher(predictor, max_batch, max_wait_s, jobs=jobs).run()


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def reply_on(conn: socket.socket) -> Callable[[Job], None]:
    """A job's reply: its answer, or its failure, sent back on the connection it came from."""

    def reply(job: Job) -> None:
        try:
            if job.failure is not None:
                protocol.send_failure(conn, job.failure)
            else:
                assert job.answer is not None, "a job finishes with an answer or a failure"
                protocol.send_array(conn, protocol.ANSWER, job.answer)
        except OSError:
            # The worker gave up on this request (its timeout) and closed the connection: the
            # connection's thread sees it closed and ends. Nothing is owed to anyone else.
            return

    return reply


def handle(conn: socket.socket, batcher: Batcher, input_shape: tuple[int, ...]) -> None:
    """A connection's thread: reads requests; each is answered on this thread or, batched, by the
    inference thread. A worker sends its next request on a connection only once it has the answer."""
    with conn:
        if peer_uid(conn) != os.getuid():
            return  # only the deployment's own user may use the model
        reply = reply_on(conn)
        while True:
            try:
                kind, rows = protocol.recv_frame(conn)
            except (ConnectionError, OSError, protocol.ProtocolError):
                return
            try:
                if kind != protocol.REQUEST:
                    raise protocol.ProtocolError(f"expected a request frame, got {kind!r}")
                assert isinstance(rows, np.ndarray), "every frame but a failure carries rows"
                job = Job(protocol.unflatten(rows, input_shape), reply)
            except protocol.ProtocolError as exc:
                protocol.send_failure(conn, str(exc))
                continue
            batcher.submit(job)


def _stop(signum: int, frame: FrameType | None) -> None:
    for writer in STATS_WRITERS:
        writer.write_now()
    print(STATS.line(), file=sys.stderr, flush=True)
    os._exit(0)  # daemon threads may be inside a model call: do not wait for them


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 1
    max_wait_ms: float = 1.0
    batch_sizes: str = DEFAULT_BATCH_SIZES  # config.BATCH_SIZE_POLICIES, or sizes
    deadline_s: float = math.inf  # a request that waited longer is failed, not computed
    threads: int = 0  # the runtime's intra-op threads; 0: its default


def serve(socket_path: Path, spec_path: Path, options: ServeOptions) -> None:
    die_with_parent()
    signal.signal(signal.SIGTERM, _stop)
    spec = ModelSpec.load(spec_path)
    started = time.monotonic()
    predictor = load_predictor(spec.model_path, options.threads)
    sizes = allowed_batch_sizes(options.batch_sizes, options.max_batch)
    # Compile and warm every size a call can have before the socket exists: no request waits on it.
    warm = predictor.compile_for(sizes or (1,))
    print(f"forkwise model server {os.getpid()}: loaded in {time.monotonic() - started:.1f} s; warmed batch sizes "
          + ", ".join(f"{s} ({t * 1e3:.1f} ms)" for s, t in warm.items())
          + ("" if sizes else " (other sizes compile on first use)"), file=sys.stderr, flush=True)
    batcher = Batcher(predictor, options.max_batch, options.max_wait_ms / 1000, sizes, options.deadline_s,
                      Pace(warm))
    threading.Thread(target=batcher.run, name="inference", daemon=True).start()
    STATS_WRITERS.append(StatsWriter(STATS, stats_path(socket_path.parent, os.getpid())))
    STATS_WRITERS[0].start()
    # Bind under a temporary name, then rename: clients see the socket only once it accepts.
    tmp = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(128)
    os.replace(tmp, socket_path)
    print(f"forkwise model server {os.getpid()}: ready on {socket_path} (max_batch={options.max_batch}, "
          f"batch sizes {','.join(map(str, sizes)) or 'any'}, threads={predictor.threads or 'default'})",
          file=sys.stderr, flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, batcher, spec.input_shape), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m forkwise.modelserver.server")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=1.0)
    parser.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES)
    parser.add_argument("--deadline-s", type=float, default=math.inf)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    serve(args.socket, args.spec, ServeOptions(args.max_batch, args.max_wait_ms, args.batch_sizes,
                                               args.deadline_s, args.threads))


if __name__ == "__main__":
    main()
