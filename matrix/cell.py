"""One matrix cell: start a deployment, verify it, load it, measure it, stop it, record it.

Runs in the process of ``forkwise cell`` (the matrix runs each cell as such a process,
in its own process group, with a hard deadline). Verification comes before load: a
cell that is not correct is never load-tested. Every verdict is observed here, OOM
included: a failing cell whose server log shows an out-of-memory error.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forkwise import gpu
from forkwise.deploy import RUN_TAG_VAR, Launch, device_env, launch, make_deployment
from forkwise.matrix import environment, resources, scenarios, stability
from forkwise.matrix import profiling as profiler
from forkwise.matrix.http import Reply, parse_json, post_json, request
from forkwise.matrix.records import CellRecord, ErrorCounts, Evidence, LoadLevel, Latency, Memory, Verdict
from forkwise.model.spec import ModelSpec
from forkwise.procs import free_port, tagged_processes
from forkwise.servers.base import ServerTimeouts
from forkwise.strategies import registry
from forkwise.webapp.db import Database

# Stored rows against the answers that acknowledged them: the same numbers, twice serialised.
RTOL, ATOL = 1e-5, 1e-6
# Answers against the reference: per device (forkwise.gpu.TOLERANCES). On CPU, float32 batched
# and unbatched calls differ by round-off only; on a GPU, TF32 matmuls and other reduction orders.

# What an out-of-memory error looks like in a server log, whichever runtime raised it: XLA/JAX
# and TensorFlow (RESOURCE_EXHAUSTED), the CUDA driver, torch (torch.OutOfMemoryError, "CUDA out
# of memory"), and a host allocator ("out of memory"). A failing cell showing one is OOM.
OOM_PATTERN = re.compile(
    r"RESOURCE_EXHAUSTED|CUDA_ERROR_OUT_OF_MEMORY|OutOfMemoryError|out of memory|ResourceExhaustedError",
    re.IGNORECASE,
)
OOM_LOG_BYTES = 4 << 20  # read at most the last 4 MiB of a log for OOM evidence
STORED_SAMPLE = 200  # rows written under a load level checked against the reference (wrk driver)


# gunicorn's guess on any SIGKILLed worker, its own WORKER TIMEOUT kills included: not evidence.
GUNICORN_OOM_GUESS = "Perhaps out of memory?"


def oom_evidence(log_text: str) -> str | None:
    """The first log line showing an out-of-memory error, or None."""
    for line in log_text.splitlines():
        if OOM_PATTERN.search(line.replace(GUNICORN_OOM_GUESS, "")):
            return line.strip()[:300]
    return None


# Lines of a server log that say why a cell failed, wherever they sit in it: an exception's
# message, a fatal signal or abort, a runtime's failed check or CUDA error, and the server's own
# word on a worker (gunicorn's WORKER TIMEOUT, uWSGI's "DAMN ! worker ... died"), and a
# framework's warning that a fork will deadlock.
TELLING_PATTERN = re.compile(
    r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception): |Cannot re-initialize|Fatal Python error|Check failed"
    r"|CUDA_ERROR_\w+|\bSIG(?:ABRT|SEGV|BUS|ILL|KILL)\b|WORKER TIMEOUT|Worker failed to boot"
    r"|worker \d+ \(pid: \d+\) died|RESOURCE_EXHAUSTED|out of memory|Segmentation fault|Aborted"
    r"|deadlock"  # JAX warns so when the process that initialised it forks
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
HIGHLIGHTS_KEPT = 8


def log_highlights(log_text: str, keep: int = HIGHLIGHTS_KEPT) -> tuple[str, ...]:
    """The first `keep` distinct telling lines of a log, each once, with how often it recurred.

    Lines that differ only in numbers (pids, times, addresses) count as the same line.
    """
    order: list[str] = []
    first: dict[str, str] = {}
    count: Counter = Counter()
    for raw in log_text.splitlines():
        line = ANSI_ESCAPE.sub("", raw).strip()
        if not TELLING_PATTERN.search(line):
            continue
        key = re.sub(r"\d+", "#", line)
        if key not in first:
            first[key] = line[:300]
            order.append(key)
        count[key] += 1
    return tuple(first[k] + (f"  (x{count[k]})" if count[k] > 1 else "") for k in order[:keep])


def hung_workers_finding(memory: Memory) -> str:
    """What the workers of a hung cell were doing: CPU time near 0 means blocked (a lock, a
    deadlock after fork), not busy computing."""
    workers = [p for p in memory.processes if p.role == "worker"]
    if not workers:
        return "no worker process was alive while the request hung"
    cpu = ", ".join(f"{p.cpu_s:.2f} s (pid {p.pid})" for p in workers)
    return f"CPU time of each worker from its fork to the hang: {cpu}"


def _read_log(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - OOM_LOG_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class CellSpec:
    """What to run and how hard to look at it."""

    strategy: str
    server: str
    workers: int = 2
    model: str = "default"
    spec_path: Path = Path()
    device: str = "cpu"
    backend: str = gpu.DEFAULT_BACKEND  # the Keras backend (KERAS_BACKEND) every process uses
    gpu_policy: str = gpu.DEFAULT_GPU_POLICY  # GPU memory policy; device=gpu only
    boot_timeout_s: float = 90.0  # launch to first correct answer, at most
    request_timeout_s: float = 10.0  # one request, at most; past it the cell HANGs
    verify_requests: int = 32
    load_levels: tuple[int, ...] = ()  # concurrency levels; empty: verify only
    warmup_s: float = 1.0  # load at the highest level before the first measured level; 0: none
    duration_s: float = 4.0  # measured seconds per level
    intervals: int = 4
    driver: str = "auto"
    worker_timeout_s: int = 30
    overrides: dict = field(default_factory=dict)  # AppSettings overrides (e.g. max_batch)
    scenario: str = "steady"  # a reliability scenario (matrix.scenarios); steady: none
    scenario_duration_s: float = 9.0
    profile_dir: Path | None = None  # py-spy the workers and model server at the highest load level
    probe_reference_ms: float = 0.0  # the run's CPU-probe reference (forkwise.matrix.stability); 0: calibrate
    quiet_budget_s: float = 10.0  # at most this long, in all, waiting for a quiet host before levels


class Verification:
    """What verification saw, request by request; the verdict is derived from it."""

    def __init__(self, spec: ModelSpec, serves_model: bool, constant: np.ndarray | None,
                 tolerance: tuple[float, float] = (1e-5, 1e-6)):
        self.inputs, self.outputs = spec.reference()
        self.rtol, self.atol = tolerance
        self.serves_model, self.constant = serves_model, constant
        self.kinds: Counter[str] = Counter()
        self.findings: list[str] = []
        self.workers_seen: dict[int, float] = {}  # pid -> first correct answer time
        self.acknowledged: dict[int, list[float]] = {}  # row id -> output the client got
        self.requests = 0
        self._lock = threading.Lock()
        self._digests: dict[str, int] | None = None

    def index_of_digest(self, digest: str) -> int | None:
        """The reference row whose float32 bytes hash to `digest` (as the app stores it), or None."""
        if self._digests is None:
            self._digests = {hashlib.sha256(row.tobytes()).hexdigest(): i for i, row in enumerate(self.inputs)}
        return self._digests.get(digest)

    def stored_rows_wrong(self, rows: list[tuple[str, list[float]]]) -> int:
        """Rows the app wrote (input digest, output) that are off the reference or of no reference input."""
        wrong = 0
        for digest, output in rows:
            index = self.index_of_digest(digest)
            if index is None or not self.matches(np.asarray(output, np.float32).reshape(1, -1), [index]):
                wrong += 1
        return wrong

    def matches(self, got: np.ndarray, rows: list[int]) -> bool:
        """Outputs (one row per instance) against the reference of `rows`, within the tolerance."""
        return bool(np.allclose(got, self.expected(rows).reshape(len(rows), -1), rtol=self.rtol, atol=self.atol))

    def expected(self, rows: list[int]) -> np.ndarray:
        if self.serves_model:
            return self.outputs[rows]
        return np.broadcast_to(self.constant, (len(rows), *self.constant.shape))

    def payload(self, rows: list[int]) -> dict:
        return {"instances": self.inputs[rows].tolist()}

    def compare(self, body, rows: list[int]) -> tuple[bool, np.ndarray | None, list[int], int, str]:
        """A 200 body against the expected rows: (correct, predictions, ids, worker, why not)."""
        want = self.expected(rows).reshape(len(rows), -1)
        try:
            got = np.asarray(body["predictions"], np.float32).reshape(len(rows), -1)
            ids, worker = [int(i) for i in body["ids"]], int(body["worker"])
        except (KeyError, TypeError, ValueError):
            return False, None, [], 0, "malformed answer"
        if len(ids) != len(rows):
            return False, got, ids, worker, f"{len(ids)} ids for {len(rows)} instances"
        if not self.matches(got, rows):
            return False, got, ids, worker, f"max abs diff {float(np.max(np.abs(got - want))):.3g}"
        return True, got, ids, worker, ""

    def check(self, reply: Reply, rows: list[int], at: float) -> str:
        """Classify one verification reply; remember the rows a 200 acknowledged. Returns the kind."""
        kind = reply.kind
        with self._lock:
            if kind == "ok":
                correct, got, ids, worker, why = self.compare(reply.body, rows)
                for row_id, out in zip(ids, got if got is not None else []):
                    self.acknowledged[row_id] = [float(x) for x in out]
                if correct:
                    self.workers_seen.setdefault(worker, at)
                else:
                    kind = "wrong"
                    self._finding(f"worker {worker}: answer off the reference ({why})")
            elif kind == "5xx":
                error = reply.body.get("error", {}) if isinstance(reply.body, dict) else {}
                self._finding(f"HTTP {reply.status}: {error.get('message') or 'no JSON error body'}")
            self.kinds[kind] += 1
            self.requests += 1
        return kind

    def _finding(self, text: str) -> None:
        if len(self.findings) < 20:
            self.findings.append(text)

    def errors(self) -> ErrorCounts:
        k = self.kinds
        return ErrorCounts(timeout=k["timeout"], connect=k["connect"], http_4xx=k["4xx"], http_5xx=k["5xx"], wrong=k["wrong"])


class CellRun:
    """The life of one cell. `run()` always stops everything it started before returning."""

    def __init__(self, cell: CellSpec, workdir: Path):
        self.cell, self.workdir = cell, workdir
        self.timings: dict[str, float] = {}
        self.findings: list[str] = []
        self.launch: Launch | None = None

    # --- phases ---------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self.launch.group.started_at

    def wait_alive(self) -> bool:
        d = self.launch.deployment
        deadline = self.launch.group.started_at + self.cell.boot_timeout_s
        while time.monotonic() < deadline:
            if not self.launch.group.alive():
                self.findings.append(f"server exited with code {self.launch.group.proc.returncode} before answering")
                return False
            if request(d.host, d.port, "GET", "/healthz", timeout_s=2).kind == "ok":
                self.timings["alive_s"] = self._elapsed()
                return True
            time.sleep(0.1)
        self.findings.append(f"/healthz did not answer within {self.cell.boot_timeout_s} s")
        return False

    def first_answer(self, v: Verification) -> str:
        """Send one instance until a correct answer; returns 'ok' or the kind that stopped it.

        503s and refused connections while workers warm up are retried, not counted.
        """
        d = self.launch.deployment
        deadline = self.launch.group.started_at + self.cell.boot_timeout_s
        last, tries = "boot", Counter()
        while time.monotonic() < deadline and self.launch.group.alive():
            reply = post_json(d.host, d.port, "/predict", v.payload([0]), self.cell.request_timeout_s)
            last = reply.kind
            tries[last] += 1
            if last in ("ok", "timeout") or (last == "5xx" and reply.status != 503):
                last = v.check(reply, [0], self._elapsed())
                if last == "ok":
                    self.timings["cold_start_s"] = self._elapsed()
                elif last == "timeout":
                    self.findings.append(f"the first request got no answer within {self.cell.request_timeout_s} s")
                return last
            time.sleep(0.2)  # 503 while the model warms, or a worker (re)starting: try again
        if not self.launch.group.alive():
            self.findings.append(f"server exited with code {self.launch.group.proc.returncode}")
        else:
            self.findings.append(f"no correct answer within {self.cell.boot_timeout_s} s; replies: {dict(tries)}")
        return last

    def verify(self, v: Verification) -> None:
        """K requests at a concurrency of at least the number of workers; stop early once hung."""
        d = self.launch.deployment
        concurrency = max(4, d.workers * d.threads)
        hung = threading.Event()

        def one(i: int, size: int) -> None:
            if hung.is_set():
                return
            rows = [(i * 7 + j) % len(v.inputs) for j in range(size)]
            reply = post_json(d.host, d.port, "/predict", v.payload(rows), self.cell.request_timeout_s)
            if v.check(reply, rows, self._elapsed()) == "timeout" and v.kinds["timeout"] >= concurrency:
                hung.set()

        budget = self.cell.verify_requests
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda i: one(i, 1 + i % 3), range(budget)))
            # Until every worker has answered: a fast app lets one worker take every connection,
            # and a worker may still be loading the model when another already answers. Larger
            # requests keep each worker busy longer, so concurrent ones reach the others. Bounded
            # by the boot deadline: a worker that never answers by then makes the cell WRONG.
            deadline = self.launch.group.started_at + self.cell.boot_timeout_s
            round_no = 1
            while not hung.is_set() and len(v.workers_seen) < d.workers and time.monotonic() < deadline:
                start = budget * round_no
                list(pool.map(lambda i: one(i, 64), range(start, start + budget)))
                round_no += 1
                time.sleep(0.2)
        if len(v.workers_seen) == d.workers:
            self.timings["warm_all_s"] = max(v.workers_seen.values())

    def rows_check(self, v: Verification, slack: int = 0) -> tuple[int, int, bool]:
        """Acknowledged rows must exist with the same outputs, and no other rows may exist
        beyond `slack` (requests whose answers never came back: the server may have written them).

        Returns (rows acknowledged, acknowledged rows found intact, every check held).
        """
        db = Database(self.launch.deployment.settings.database_url)
        total = db.count()
        stored = db.outputs(list(v.acknowledged))
        missing = [i for i in v.acknowledged if i not in stored]
        differing = [i for i, out in v.acknowledged.items()
                     if i in stored and not np.allclose(stored[i], out, rtol=RTOL, atol=ATOL)]
        if missing:
            self.findings.append(f"{len(missing)} acknowledged rows are missing, e.g. ids {missing[:5]}")
        if differing:
            self.findings.append(f"{len(differing)} rows hold other outputs than their answers, e.g. ids {differing[:5]}")
        extra = total - len(v.acknowledged)
        if not 0 <= extra <= slack:
            self.findings.append(f"the table holds {total} rows for {len(v.acknowledged)} acknowledged"
                                 f" ({slack} requests unanswered)")
        intact = len(v.acknowledged) - len(missing) - len(differing)
        return len(v.acknowledged), intact, intact == len(v.acknowledged) and 0 <= extra <= slack

    # --- the whole cell -----------------------------------------------------------------

    def run(self) -> CellRecord:
        cell = self.cell
        started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        strategy_cls = registry.get(cell.strategy)
        scenario = scenarios.get(cell.scenario, strategy_cls)
        deployment = make_deployment(
            strategy=cell.strategy, server=cell.server, workers=cell.workers, spec_path=cell.spec_path,
            run_dir=self.workdir, port=free_port(), overrides=cell.overrides,
            timeouts=ServerTimeouts(worker_s=cell.worker_timeout_s), max_requests=scenario.max_requests,
            backend=cell.backend, device=cell.device, gpu_policy=cell.gpu_policy,
        )
        spec = ModelSpec.load(cell.spec_path)
        constant = np.zeros(spec.output_shape, np.float32) if not strategy_cls.serves_model else None
        rtol, atol = gpu.tolerance(cell.device)
        v = Verification(spec, strategy_cls.serves_model, constant, (rtol, atol))
        memory, load, disruption = None, (), None
        verdict, rows_expected, rows_found = Verdict.BOOT, 0, 0
        self.launch = launch(deployment)
        try:
            master = self.launch.group.pid
            with resources.WorkerWatch(master) as watch:
                if self.wait_alive():
                    first = self.first_answer(v)
                    if first == "ok":
                        self.verify(v)
                    verdict = self.classify(v, first, watch)
                    if not verdict.ok and self.launch.group.alive():
                        # The failing state, process by process: a master holding the GPU
                        # before any worker answered is the evidence for a fork-safety failure.
                        memory = resources.measure_memory(master)
                        if verdict is Verdict.HANG:
                            self.findings.append(hung_workers_finding(memory))
                    rows_expected, rows_found, rows_hold = self.rows_check(v)
                    if verdict is Verdict.OK and not rows_hold:
                        verdict = Verdict.LOST
                    if verdict is Verdict.OK:
                        memory = resources.measure_memory(master)
                        if scenario.name == "bad-input":
                            verdict = self.bad_input(v)
                        elif scenario.name != "steady":
                            disruption = scenarios.run_disruption(
                                self, v, scenario, cell.scenario_duration_s, cell.request_timeout_s)
                            verdict = self.classify_disruption(disruption, scenario, watch)
                        elif cell.load_levels:
                            load = tuple(self.load(v, spec))
                            verdict = self.classify_after_load(load, verdict)
                            if self._workers_died(watch):
                                verdict = Verdict.CRASH
                        if scenario.name != "steady":
                            slack = disruption.unacknowledged if disruption else 0
                            rows_expected, rows_found, rows_hold = self.rows_check(v, slack)
                            if verdict is Verdict.OK and not rows_hold:
                                verdict = Verdict.LOST
        finally:
            killed = self.launch.group.stop(grace_s=10)
            if killed:
                self.findings.append(f"had to SIGKILL {len(killed)} processes at stop (pids {killed[:8]})")
            leftovers = tagged_processes(RUN_TAG_VAR, self.launch.tag)
            for proc in leftovers:  # descendants that left the group: still ours, stop them
                self.findings.append(f"process {proc.pid} outlived its group; killed")
                proc.kill()
        highlights: tuple[str, ...] = ()
        if not verdict.ok:
            log_text = _read_log(self.launch.group.log_path)
            oom = oom_evidence(log_text)
            if oom is not None:
                self.findings.insert(0, f"out of memory (otherwise {verdict.value}); the server log shows: {oom}")
                verdict = Verdict.OOM
            highlights = log_highlights(log_text)
        log_tail = "" if verdict is Verdict.OK else self.launch.group.log_tail(40)
        return CellRecord(
            strategy=cell.strategy, server=cell.server, workers=cell.workers, threads=deployment.threads,
            model=cell.model, device=cell.device, backend=cell.backend, verdict=verdict,
            cold_start_s=_round(self.timings.get("cold_start_s")), warm_all_s=_round(self.timings.get("warm_all_s")),
            requests=v.requests, ok=v.kinds["ok"], errors=v.errors(),
            rows_expected=rows_expected, rows_found=rows_found,
            worker_pids=tuple(sorted(v.workers_seen)),
            evidence=Evidence(
                findings=tuple(self.findings + v.findings),
                timings_s={k: round(x, 3) for k, x in self.timings.items()},
                log_tail=log_tail,
                log_highlights=highlights,
            ),
            environment=environment.current(), started_at=started_at, duration_s=round(time.monotonic() - t0, 2),
            settings={"preload_app": deployment.settings.preload_app, "threads": deployment.threads,
                      "request_timeout_s": cell.request_timeout_s, "worker_timeout_s": cell.worker_timeout_s,
                      "rtol": rtol, "atol": atol, "gpu_policy": cell.gpu_policy if cell.device == "gpu" else "",
                      "device_env": {k: v for k, v in device_env(deployment).items()},
                      **strategy_cls.knobs(deployment.settings)},
            load=load, memory=memory, scenario=cell.scenario, disruption=disruption,
        )

    def _workers_died(self, watch: "resources.WorkerWatch") -> bool:
        workers = self.launch.deployment.workers
        if watch.vanished or len(watch.seen) > workers:
            self.findings.append(
                f"workers died or were respawned: {len(watch.seen)} worker pids seen for {workers} workers, "
                f"vanished {watch.vanished[:8]}"
            )
            return True
        return False

    def classify(self, v: Verification, first: str, watch: "resources.WorkerWatch") -> Verdict:
        """Observed facts -> verdict, most severe first."""
        d = self.launch.deployment
        died = self._workers_died(watch)
        if v.kinds["timeout"]:
            return Verdict.HANG
        if not self.launch.group.alive() or died:
            return Verdict.CRASH
        if first != "ok" and not v.kinds["5xx"] and not v.kinds["wrong"]:
            return Verdict.BOOT
        if v.kinds["5xx"]:
            return Verdict.ERROR
        if v.kinds["wrong"] or v.kinds["connect"] or v.kinds["4xx"]:
            return Verdict.WRONG
        if len(v.workers_seen) < min(d.workers, 2):
            self.findings.append(f"only {len(v.workers_seen)} of {d.workers} workers answered {v.requests} requests")
            return Verdict.WRONG
        return Verdict.OK

    def classify_disruption(self, dis, scenario, watch) -> Verdict:
        """A disruption's facts -> verdict. Failed requests are measured, not failures in themselves;
        hangs, 500s, wrong answers and no recovery are."""
        other_5xx = dis.failed.http_5xx - dis.http_503
        if dis.event:
            self.findings.append(f"event at {dis.at_s} s: {dis.event}")
        if dis.failed.timeout:
            self.findings.append(f"{dis.failed.timeout} requests timed out during {scenario.name}")
            return Verdict.HANG
        if other_5xx:
            self.findings.append(f"{other_5xx} answers were 5xx other than 503 during {scenario.name}")
            return Verdict.ERROR
        if dis.answers_wrong:
            self.findings.append(f"{dis.answers_wrong} answers were off the reference during {scenario.name}")
            return Verdict.WRONG
        if not dis.recovered:
            what = "after the event" if dis.event else "by the end of the window"
            self.findings.append(f"throughput did not recover {what} ({scenario.name})")
            return Verdict.CRASH
        if scenario.disrupts_workers:
            fresh = set(dis.workers_answering) - set(v_pid for v_pid in watch.seen[: self.launch.deployment.workers])
            if scenario.event is not None and not fresh:
                self.findings.append("no replacement worker answered after the disruption")
                return Verdict.CRASH
        elif self._workers_died(watch):
            return Verdict.CRASH
        return Verdict.OK

    def bad_input(self, v: Verification) -> Verdict:
        """The bad-input campaign, then the same verification again: still correct?"""
        failed, findings = scenarios.bad_input_campaign(self, v)
        self.findings += findings
        before = v.requests
        self.verify(v)
        if failed.timeout or v.kinds["timeout"]:
            return Verdict.HANG
        if failed.http_5xx or failed.connect or v.kinds["5xx"]:
            self.findings.append(f"bad input got {failed.http_5xx} 5xx and {failed.connect} failed connections")
            return Verdict.ERROR
        if v.kinds["wrong"] or v.requests == before:
            return Verdict.WRONG
        return Verdict.OK

    def classify_after_load(self, levels: tuple[LoadLevel, ...], verdict: Verdict) -> Verdict:
        for level in levels:
            e = level.errors
            tag = f"under load at concurrency {level.concurrency}"
            if e.timeout:
                self.findings.append(f"{e.timeout} requests timed out {tag}")
                return Verdict.HANG
            if e.http_5xx:
                self.findings.append(f"{e.http_5xx} answers were 5xx {tag}")
                return Verdict.ERROR
            if level.sampled_wrong:
                self.findings.append(f"{level.sampled_wrong} of {level.sampled} sampled answers were off {tag}")
                return Verdict.WRONG
            rows = (f"{level.rows_expected} rows acknowledged, {level.rows_found} written, "
                    f"{level.unacknowledged} requests unanswered {tag}")
            if level.rows_lost:
                self.findings.append(rows)
                return Verdict.LOST
            if level.rows_unexplained:
                # The built-in driver accounts for every request; wrk's count of requests cut off
                # at the end of a run is approximate, so surplus rows under wrk are only noted.
                self.findings.append(rows + ("" if level.driver == "builtin" else " (wrk: noted, not judged)"))
                if level.driver == "builtin":
                    return Verdict.LOST
            if e.connect > 0.01 * max(1, level.requests):
                self.findings.append(f"{e.connect} connections failed {tag}")
                return Verdict.ERROR
        return verdict

    def load(self, v: Verification, spec: ModelSpec):
        from forkwise.matrix.load import run_load

        d = self.launch.deployment
        db = Database(d.settings.database_url)
        bodies = [json.dumps(v.payload([i])).encode() for i in range(len(v.inputs))]
        url = f"http://{d.host}:{d.port}/predict"
        master = self.launch.group.pid
        in_flight = 0  # requests of the warm-up whose answers never came back: they may write rows later
        if self.cell.warmup_s > 0:
            # Once per launch, at the highest level: thread pools, queues and the model server's
            # batches reach their steady state before anything is measured. Its requests are
            # not counted: every level counts its own rows from here on.
            in_flight = run_load(url, bodies, concurrency=max(self.cell.load_levels), warmup_s=0.0,
                                 duration_s=self.cell.warmup_s, intervals=1, timeout_s=self.cell.request_timeout_s,
                                 driver=self.cell.driver).unacknowledged
        gate = stability.QuietGate(self.cell.probe_reference_ms, self.cell.quiet_budget_s)
        for concurrency in self.cell.load_levels:
            slowdown_before = gate.before()
            rows_before, cpu_before = db.count(), resources.cpu_seconds(master)
            last_id_before = db.last_id()
            profiling = []
            if self.cell.profile_dir and concurrency == max(self.cell.load_levels):
                label = f"{self.cell.strategy}.{self.cell.server}.w{d.workers}.{self.cell.model}.c{concurrency}"
                profiling = profiler.start(master, self.cell.profile_dir, self.cell.duration_s, label)
            result = run_load(
                url, bodies, concurrency=concurrency, warmup_s=0.0,
                duration_s=self.cell.duration_s, intervals=self.cell.intervals,
                timeout_s=self.cell.request_timeout_s, driver=self.cell.driver,
            )
            server_cpu = resources.cpu_seconds(master) - cpu_before
            slowdown = max(slowdown_before, gate.after())
            self.timings["quiet_wait_s"] = round(gate.waited_s, 3)
            for path in profiler.finish(profiling, timeout_s=10):
                self.findings.append(f"profile at concurrency {concurrency}: {path}")
            rows_after = db.count()
            wrong = 0
            for raw, index in zip(result.sampled_bodies, result.sampled_requests):
                if not v.compare(parse_json(raw), [index])[0]:
                    wrong += 1
            sampled = len(result.sampled_bodies)
            if not sampled:
                # wrk hands back no bodies: check what the workers computed under load through the
                # rows they wrote (the same numbers as their answers, as verification checks).
                stored = db.sample_after(last_id_before, STORED_SAMPLE)
                sampled, wrong = len(stored), v.stored_rows_wrong(stored)
            samples = tuple(round(x, 1) for x in result.rps_samples)
            unacknowledged, in_flight = result.unacknowledged + in_flight, 0
            yield LoadLevel(
                concurrency=concurrency, duration_s=round(result.duration_s, 3), requests=result.ok,
                rps=round(float(np.mean(samples)) if samples else 0.0, 1),
                rps_stdev=round(float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0, 1),
                rps_samples=samples,
                latency=Latency(**{f"{k}_ms": round(result.latency_ms[k], 3) for k in ("p50", "p90", "p99", "max", "mean")}),
                errors=ErrorCounts(timeout=result.timeout, connect=result.connect, http_4xx=result.http_4xx,
                                   http_5xx=result.http_5xx, wrong=wrong),
                rows_expected=result.total_ok_including_warmup, rows_found=rows_after - rows_before,
                unacknowledged=unacknowledged,
                sampled=sampled, sampled_wrong=wrong, driver=result.driver,
                driver_cpu_s=round(result.driver_cpu_s, 2), server_cpu_s=round(server_cpu, 2),
                host_slowdown=round(slowdown, 2),
            )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_cell(cell: CellSpec, workdir: Path | None = None) -> CellRecord:
    """Run one cell in a fresh private work directory (kept only when `workdir` is given)."""
    if workdir is not None:
        return CellRun(cell, workdir).run()
    with tempfile.TemporaryDirectory(prefix="forkwise-cell-") as tmp:
        return CellRun(cell, Path(tmp)).run()


def summary_line(record: CellRecord) -> str:
    cold = f"{record.cold_start_s:.1f}s" if record.cold_start_s is not None else "-"
    scenario = "" if record.scenario == "steady" else f" {record.scenario:<17}"
    text = (f"{record.strategy:<22} {record.server:<17} w{record.workers}{scenario}  {record.verdict.value:<5} "
            f"cold {cold:>6}  ok {record.ok}/{record.requests}  rows {record.rows_found}/{record.rows_expected}")
    for level in record.load:
        text += f"  c{level.concurrency}: {level.rps:.0f} rps p99 {level.latency.p99_ms:.1f} ms"
    if not record.verdict.ok and record.evidence.findings:
        text += f"\n    {record.evidence.findings[0]}"
    return text

