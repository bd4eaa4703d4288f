"""A small blocking HTTP client for verification: one request, a bounded timeout, a typed outcome."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    kind: str  # "ok" (2xx) | "4xx" | "5xx" | "timeout" | "connect"
    status: int | None
    body: Any  # parsed JSON, or None
    elapsed_s: float
    headers: dict[str, str]
    error: str = ""
    # A timeout given up on while the deployment's progress was watched: True when it made no CPU
    # progress (the evidence of a hang), False when it still computed at the ceiling; else None.
    stalled: bool | None = None


def parse_json(raw: bytes) -> Any:
    """A response body as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def status_kind(status: int) -> str:
    return "ok" if 200 <= status < 300 else "4xx" if status < 500 else "5xx"


# Asked after each slice of waiting with no answer: wait one more slice? (A deployment that is
# still computing is slow, not hung: forkwise.matrix.run.progress.)
KeepWaiting = Callable[[float], bool]


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 10.0,
            keep_waiting: KeepWaiting | None = None, ceiling_s: float | None = None) -> Reply:
    """One request. Without `keep_waiting`, no answer within `timeout_s` is a timeout. With it, the
    wait goes on slice by slice (`timeout_s` each) while keep_waiting(slice_s) says so, up to
    `ceiling_s` in all."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        if keep_waiting is not None:
            waited = _await_answer(conn.sock, timeout_s, keep_waiting, ceiling_s or timeout_s)
            if waited is not None:
                why, stalled = waited
                return Reply("timeout", None, None, time.monotonic() - start, {}, why, stalled)
        resp = conn.getresponse()
        raw = resp.read()
        elapsed = time.monotonic() - start
        return Reply(status_kind(resp.status), resp.status, parse_json(raw), elapsed, dict(resp.getheaders()))
    except TimeoutError:
        return Reply("timeout", None, None, time.monotonic() - start, {}, f"no answer within {timeout_s} s")
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return Reply("connect", None, None, time.monotonic() - start, {}, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _await_answer(sock: socket.socket, slice_s: float, keep_waiting: KeepWaiting,
                  ceiling_s: float) -> tuple[str, bool] | None:
    """Wait until the answer's first bytes arrive: None then, else (why the wait was given up,
    whether the deployment had stalled)."""
    start = time.monotonic()
    while True:
        left = ceiling_s - (time.monotonic() - start)
        readable, _, _ = select.select([sock], [], [], max(0.0, min(slice_s, left)))
        if readable:
            return None
        waited = time.monotonic() - start
        if waited >= ceiling_s:
            return f"no answer within {waited:.1f} s, the ceiling, while the deployment kept computing", False
        if not keep_waiting(min(slice_s, waited)):
            return (f"no answer within {waited:.1f} s, and the deployment made no progress in the last "
                    f"{slice_s:g} s"), True


def post_json(host: str, port: int, path: str, payload: Any, timeout_s: float,
              keep_waiting: KeepWaiting | None = None, ceiling_s: float | None = None) -> Reply:
    return request(host, port, "POST", path, json.dumps(payload).encode(),
                   {"Content-Type": "application/json"}, timeout_s, keep_waiting, ceiling_s)


def send_oversized(host: str, port: int, path: str, body: bytes, content_type: str, timeout_s: float) -> Reply:
    """POST a body the server should refuse before reading it: a server that answers 413 and
    closes while the body is still being sent is right, so a broken pipe here is not a failure.
    The answer, if the server sent one, is read after the send stops."""
    start = time.monotonic()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-body: read what it said
            sock.sendall(head + body)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    elapsed = time.monotonic() - start
    if not data.startswith(b"HTTP/"):
        return Reply("connect", None, None, elapsed, {}, "connection closed without an answer")
    status = int(data.split(b" ", 2)[1])
    return Reply(status_kind(status), status, None, elapsed, {})
