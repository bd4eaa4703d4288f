"""Request validation: turn a POST /predict body into a float32 batch, or a clear 4xx.

Checks run cheapest first, and nothing is written before every check has passed.
"""

from __future__ import annotations

import json
import math
from typing import NoReturn

import numpy as np

from forkwise.errors import ForkwiseError


class BadRequest(ForkwiseError):
    """The client sent something forkwise will not process; `status` is the HTTP code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_NUMBER_TYPES = (int, float)
_F32_MAX = float(np.finfo(np.float32).max)


def _reject_constant(name: str) -> NoReturn:
    raise BadRequest(422, "not_finite", f"{name} is not allowed: every value must be a finite number")


def parse_body(body: bytes) -> object:
    """Bytes -> JSON value. NaN/Infinity literals are refused (Python's json would accept them)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid_json", "the body is not UTF-8 encoded JSON") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(400, "invalid_json",
                         f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest(400, "invalid_json", "the JSON is nested too deeply") from None


def _shape_note(instance_shape: tuple[int, ...]) -> str:
    """For a model of rank > 1, where a row sits is not obvious: name the whole shape."""
    return f" (instance shape {list(instance_shape)})" if len(instance_shape) > 1 else ""


def _check_leaf_row(row: object, width: int, where: str, instance_shape: tuple[int, ...]) -> None:
    if not isinstance(row, list):
        raise BadRequest(422, "wrong_shape", f"{where} must be a list of {width} numbers{_shape_note(instance_shape)}")
    if len(row) != width:
        raise BadRequest(422, "wrong_shape",
                         f"{where} has {len(row)} values; the model takes {width}{_shape_note(instance_shape)}")
    for j, value in enumerate(row):
        # bool is an int subclass: refuse it explicitly, as well as strings and null.
        if type(value) not in _NUMBER_TYPES:
            raise BadRequest(422, "not_numeric", f"{where}[{j}] is {type(value).__name__}, not a number")
        if type(value) is float and not math.isfinite(value):
            raise BadRequest(422, "not_finite", f"{where}[{j}] is not a finite number")


def _check_instance(value: object, shape: tuple[int, ...], where: str, instance_shape: tuple[int, ...]) -> None:
    if len(shape) == 1:
        _check_leaf_row(value, shape[0], where, instance_shape)
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        raise BadRequest(422, "wrong_shape", f"{where} must be a list of {shape[0]} items{_shape_note(instance_shape)}")
    for i, item in enumerate(value):
        _check_instance(item, shape[1:], f"{where}[{i}]", instance_shape)


def instances_from(payload: object, input_shape: tuple[int, ...], max_instances: int) -> np.ndarray:
    """A parsed body -> float32 array of shape (n, *input_shape)."""
    if not isinstance(payload, dict):
        raise BadRequest(400, "missing_instances", 'the body must be a JSON object like {"instances": [[...], ...]}')
    instances = payload.get("instances")
    if instances is None:
        raise BadRequest(400, "missing_instances", 'the body has no "instances" list')
    if not isinstance(instances, list):
        raise BadRequest(422, "wrong_shape", '"instances" must be a list of instances')
    if not instances:
        raise BadRequest(400, "missing_instances", '"instances" is empty: send at least one instance')
    if len(instances) > max_instances:
        raise BadRequest(413, "too_many_instances", f"{len(instances)} instances; at most {max_instances} per request")
    for i, instance in enumerate(instances):
        _check_instance(instance, input_shape, f"instances[{i}]", input_shape)
    try:
        batch = np.asarray(instances, dtype=np.float64)
    except OverflowError:
        raise BadRequest(422, "not_finite", "a value is too large to be a number the model can take") from None
    if not np.all(np.abs(batch) <= _F32_MAX):
        raise BadRequest(422, "not_finite", "a value is outside the float32 range the model takes")
    return batch.astype(np.float32)
