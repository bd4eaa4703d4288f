"""Request validation cost: a POST /predict body (bytes) to a float32 batch of 256-wide rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forkwise.webapp.validation import instances_from, parse_body

WIDTH = 256
MAX_INSTANCES = 256


def body_of(n: int) -> bytes:
    rows = np.random.default_rng(n).standard_normal((n, WIDTH)).astype(np.float32)
    return json.dumps({"instances": rows.tolist()}).encode()


def validate(body: bytes) -> np.ndarray:
    return instances_from(parse_body(body), (WIDTH,), MAX_INSTANCES)


@pytest.mark.parametrize("n", [1, 32])
@pytest.mark.benchmark(group="validation", max_time=0.5, min_rounds=20)
def test_validate_body(benchmark, n, mean_seconds):
    body = body_of(n)
    batch = benchmark(validate, body)
    assert batch.shape == (n, WIDTH) and batch.dtype == np.float32
    per_call = mean_seconds(benchmark, lambda: validate(body))
    benchmark.extra_info.update({
        "instances": n,
        "body_bytes": len(body),
        "validate_us": round(per_call * 1e6, 2),
        "per_instance_us": round(per_call * 1e6 / n, 2),
    })
