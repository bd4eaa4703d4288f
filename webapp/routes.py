"""HTTP routes: POST /predict, GET /healthz, /readyz, /stats. JSON in, JSON out."""

from __future__ import annotations

import hashlib
import os

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from forkwise.errors import DatabaseBusy, DatabaseUnavailable, ModelUnavailable
from forkwise.webapp.db import first_line
from forkwise.webapp.process import AppProcess
from forkwise.webapp.validation import BadRequest, instances_from, parse_body

bp = Blueprint("forkwise", __name__)


def _state() -> AppProcess:
    return current_app.extensions["forkwise"]


@bp.post("/predict")
def predict() -> Response:
    state = _state()
    settings = state.settings
    mimetype = request.mimetype
    if mimetype != "application/json":
        raise BadRequest(415, "unsupported_media_type",
                         f"send Content-Type: application/json, not {mimetype or 'nothing'}")
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        raise BadRequest(413, "body_too_large", f"the body is {length} bytes; at most {settings.max_body_bytes}")
    # Werkzeug enforces MAX_CONTENT_LENGTH on the stream too (chunked bodies): 413 before parsing.
    batch = instances_from(parse_body(request.get_data(cache=False)), state.spec.input_shape, settings.max_instances)
    outputs = state.predict(batch)
    digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in batch]
    values = outputs.reshape(len(batch), -1).tolist() if outputs.ndim > 1 else [[v] for v in outputs.tolist()]
    pid = os.getpid()
    written = state.db.record(digests, values, pid, state.strategy.name)
    # The digests come back from the database: a client can check that the rows are its own.
    return jsonify(predictions=outputs.tolist(), ids=[i for i, _ in written], digests=[d for _, d in written],
                   worker=pid, strategy=state.strategy.name)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="alive", pid=os.getpid())


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    state = _state()
    if state.ready:
        return jsonify(status="ready", pid=os.getpid())
    return jsonify(status=f"not ready: {state.not_ready_because}", pid=os.getpid()), 503


@bp.get("/stats")
def stats() -> Response:
    state = _state()
    return jsonify(
        rows=state.db.count(),
        pid=os.getpid(),
        strategy=state.strategy.name,
        ready=state.ready,
        settings=type(state.strategy).knobs(state.settings),
    )


def _error(status: int, code: str, message: str, retry_after: int | None = None) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(ModelUnavailable)
    def model_unavailable(exc: ModelUnavailable) -> Response:
        return _error(503, "model_unavailable", str(exc), retry_after=exc.retry_after_s)

    @app.errorhandler(DatabaseBusy)
    def database_busy(exc: DatabaseBusy) -> Response:
        return _error(503, "database_busy", str(exc), retry_after=exc.retry_after_s)

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(exc: DatabaseUnavailable) -> Response:
        app.logger.warning("503: %s", exc)
        return _error(503, "database_unavailable", str(exc), retry_after=exc.retry_after_s)

    @app.errorhandler(SQLAlchemyError)
    def database_error(exc: SQLAlchemyError) -> Response:
        # A broken connection or a bug: a 500 whose body says what the database driver said.
        app.logger.error("500: database error", exc_info=exc)
        return _error(500, "database_error", f"database error: {first_line(exc)}")

    # Werkzeug's own HTTP errors (404, 405, 413 from MAX_CONTENT_LENGTH...) as JSON too.
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, code, exc.description or exc.name)
