"""Request validation, through the real app (Flask test client, `control` strategy: no ML runtime)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkwise.webapp import create_app
from forkwise.webapp.validation import BadRequest, instances_from, parse_body


@pytest.fixture
def client(settings_for, tiny_spec_path):
    app = create_app(settings_for("control", tiny_spec_path, max_instances=16, max_body_bytes=20_000))
    return app.test_client()


def rows(client) -> int:
    return client.get("/stats").get_json()["rows"]


GOOD = {"instances": [[0.5] * 8]}


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/predict", data=data, content_type=content_type)


def test_good_request_writes_one_row_per_instance(client):
    resp = post(client, {"instances": [[0.5] * 8, [1] * 8]})
    assert resp.status_code == 200
    body = resp.get_json()
    assert len(body["predictions"]) == 2 and len(body["ids"]) == 2
    assert rows(client) == 2


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 413, None),  # over max_body_bytes: refused before parsing
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),  # deep nesting under the size limit
        ({}, 400, "missing_instances"),
        ([1, 2], 400, "missing_instances"),
        ({"instances": []}, 400, "missing_instances"),
        ({"instances": "x"}, 422, "wrong_shape"),
        ({"instances": [[0.5] * 7]}, 422, "wrong_shape"),
        ({"instances": [0.5] * 8}, 422, "wrong_shape"),
        ({"instances": [[[0.5]] * 8]}, 422, "not_numeric"),
        ({"instances": [["1"] * 8]}, 422, "not_numeric"),
        ({"instances": [[True] * 8]}, 422, "not_numeric"),
        ({"instances": [[None] * 8]}, 422, "not_numeric"),
        (b'{"instances": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}', 422, "not_finite"),
        (b'{"instances": [[Infinity, 1, 1, 1, 1, 1, 1, 1]]}', 422, "not_finite"),
        (b'{"instances": [[1e999, 1, 1, 1, 1, 1, 1, 1]]}', 422, "not_finite"),
        ({"instances": [[10**400] + [1] * 7]}, 422, "not_finite"),
        ({"instances": [[1e39] + [1] * 7]}, 422, "not_finite"),
        ({"instances": [[0.5] * 8] * 17}, 413, "too_many_instances"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(client, body, status, code):
    resp = post(client, body)
    assert resp.status_code == status, resp.get_data(as_text=True)[:200]
    error = resp.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    assert rows(client) == 0
    assert post(client, GOOD).status_code == 200  # and the app keeps answering


def test_wrong_content_type_is_415(client):
    assert post(client, GOOD, content_type="text/plain").status_code == 415
    assert post(client, GOOD, content_type="").status_code == 415


def test_wrong_method_is_405_json(client):
    resp = client.get("/predict")
    assert resp.status_code == 405 and resp.get_json()["error"]["message"]


def test_unknown_path_is_404_json(client):
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=10) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_any_json_payload_is_answered_without_5xx(client, payload):
    resp = post(client, {"instances": payload} if not isinstance(payload, dict) else payload)
    assert resp.status_code in (200, 400, 413, 415, 422)
    if resp.status_code != 200:
        assert resp.get_json()["error"]["message"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_any_bytes_are_answered_without_5xx(client, body):
    assert post(client, body).status_code in (200, 400, 413, 422)


@given(row=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=8, max_size=8))
def test_valid_rows_convert_exactly_to_float32(row):
    batch = instances_from({"instances": [row]}, (8,), 4)
    assert batch.dtype.name == "float32" and batch.shape == (1, 8)
    assert batch[0].tolist() == pytest.approx(row)


def test_parse_body_refuses_nan_literal():
    with pytest.raises(BadRequest) as info:
        parse_body(b"[NaN]")
    assert info.value.status == 422
