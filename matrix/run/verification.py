"""Verification: each answer of a deployment against the model's reference set, request by request."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from typing import Any

import numpy as np

from forkwise import gpu
from forkwise.matrix import verdicts
from forkwise.matrix.records.types import ErrorCounts
from forkwise.matrix.run.http import Reply
from forkwise.model.spec import ModelSpec
from forkwise.strategies import registry


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

    @classmethod
    def of(cls, spec: ModelSpec, strategy: str, device: str) -> Verification:
        """What a strategy's answers are checked against: the model's reference outputs, or the
        constant a model-less strategy (the control) answers; within the device's tolerance."""
        strategy_cls = registry.get(strategy)
        constant = np.zeros(spec.output_shape, np.float32) if not strategy_cls.serves_model else None
        return cls(spec, strategy_cls.serves_model, constant, gpu.tolerance(device))

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
        assert self.constant is not None, "an app that serves no model answers a constant"
        return np.broadcast_to(self.constant, (len(rows), *self.constant.shape))

    def digest(self, row: int) -> str:
        """The input digest the app stores for reference row `row` (sha256 of its float32 bytes)."""
        return hashlib.sha256(self.inputs[row].tobytes()).hexdigest()

    def payload(self, rows: list[int]) -> dict:
        return {"instances": self.inputs[rows].tolist()}

    def busy_rows(self, body_budget: int, most: int = 64) -> int:
        """Rows of a request that keeps a worker busy longer: `most`, or fewer when a body of that
        many would pass `body_budget` bytes (a network's instance is thousands of values: 64 of them
        would near the body limit and take the app longer to parse than to compute)."""
        one = len(json.dumps(self.inputs[0].tolist())) + 2  # its JSON, and the comma between instances
        return max(1, min(most, body_budget // one))

    def compare(self, body: Any, rows: list[int]) -> tuple[bool, np.ndarray | None, list[int], int, str]:
        """A 200 body against the expected rows: (correct, predictions, ids, worker, why not)."""
        want = self.expected(rows).reshape(len(rows), -1)
        try:
            got = np.asarray(body["predictions"], np.float32).reshape(len(rows), -1)
            ids, worker = [int(i) for i in body["ids"]], int(body["worker"])
            digests = [str(d) for d in body["digests"]]
        except (KeyError, TypeError, ValueError):
            return False, None, [], 0, "malformed answer"
        if len(ids) != len(rows):
            return False, got, ids, worker, f"{len(ids)} ids for {len(rows)} instances"
        if digests != [self.digest(r) for r in rows]:
            # The database returned rows of other inputs: an answer read off another request's query.
            why = f"rows {ids[:4]} the database returned hold other inputs than this request's"
            return False, got, ids, worker, why
        if not self.matches(got, rows):
            return False, got, ids, worker, f"max abs diff {float(np.max(np.abs(got - want))):.3g}"
        return True, got, ids, worker, ""

    def check(self, reply: Reply, rows: list[int], at: float) -> str:
        """Classify one verification reply; remember the rows a 200 acknowledged. Returns the kind."""
        kind = reply.kind
        with self._lock:
            if kind == "ok":
                correct, got, ids, worker, why = self.compare(reply.body, rows)
                # ids and predictions come from the server under test: their lengths may differ
                for row_id, out in zip(ids, got if got is not None else [], strict=False):
                    self.acknowledged[row_id] = [float(x) for x in out]
                if correct:
                    self.workers_seen.setdefault(worker, at)
                else:
                    kind = "wrong"
                    self._finding(f"worker {worker}: answer off the reference ({why})")
            elif kind == "5xx":
                error = reply.body.get("error", {}) if isinstance(reply.body, dict) else {}
                self._finding(f"HTTP {reply.status}: {error.get('message') or 'no JSON error body'}")
            elif kind == "timeout" and reply.stalled is not None:
                self.kinds["stalled" if reply.stalled else "busy"] += 1
            self.kinds[kind] += 1
            self.requests += 1
        return kind

    def note(self, text: str) -> None:
        """A finding of verification (the first 20 are kept)."""
        with self._lock:
            self._finding(text)

    def _finding(self, text: str) -> None:
        if len(self.findings) < 20:
            self.findings.append(text)

    def errors(self) -> ErrorCounts:
        k = self.kinds
        return ErrorCounts(timeout=k["timeout"], connect=k["connect"], http_4xx=k["4xx"], http_5xx=k["5xx"],
                           wrong=k["wrong"])

    def answers(self) -> verdicts.Answers:
        """What verification's replies were, for the verdict rules."""
        k = self.kinds
        return verdicts.Answers(ok=k["ok"], wrong=k["wrong"], timeout=k["timeout"], stalled=k["stalled"],
                                busy=k["busy"], connect=k["connect"], http_4xx=k["4xx"], http_5xx=k["5xx"])
