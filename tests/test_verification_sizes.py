"""The larger verification requests (the rounds until every worker answered) stay within a share of the
body limit, whatever the size of the model's instance."""

from __future__ import annotations

import json

import numpy as np

from forkwise.matrix.run.verification import Verification


def verification_of(instance_shape: tuple[int, ...]) -> Verification:
    v = object.__new__(Verification)  # only the reference inputs matter here
    v.inputs = np.random.default_rng(0).standard_normal((8, *instance_shape)).astype(np.float32)
    return v


def test_a_small_instance_gets_64_rows_and_a_networks_instance_fewer_within_the_budget():
    budget = 4 * 1024 * 1024 // 8
    assert verification_of((256,)).busy_rows(budget) == 64
    image = verification_of((48, 48, 3))
    rows = image.busy_rows(budget)
    assert 1 <= rows < 64
    assert len(json.dumps(image.payload(list(range(rows)) if rows <= 8 else [0] * rows))) <= budget
    assert verification_of((4096, 64)).busy_rows(budget) == 1  # never none: one instance goes anyway
