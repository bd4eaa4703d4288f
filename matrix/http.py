"""A small blocking HTTP client for verification: one request, a bounded timeout, a typed outcome."""

from __future__ import annotations

import http.client
import json
import socket
import time
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


def parse_json(raw: bytes):
    """A response body as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def status_kind(status: int) -> str:
    return "ok" if 200 <= status < 300 else "4xx" if status < 500 else "5xx"


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> Reply:
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        elapsed = time.monotonic() - start
        return Reply(status_kind(resp.status), resp.status, parse_json(raw), elapsed, dict(resp.getheaders()))
    except (socket.timeout, TimeoutError):
        return Reply("timeout", None, None, time.monotonic() - start, {}, f"no answer within {timeout_s} s")
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return Reply("connect", None, None, time.monotonic() - start, {}, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def post_json(host: str, port: int, path: str, payload: Any, timeout_s: float) -> Reply:
    return request(host, port, "POST", path, json.dumps(payload).encode(),
                   {"Content-Type": "application/json"}, timeout_s)


def send_oversized(host: str, port: int, path: str, body: bytes, content_type: str, timeout_s: float) -> Reply:
    """POST a body the server should refuse before reading it: a server that answers 413 and
    closes while the body is still being sent is right, so a broken pipe here is not a failure.
    The answer, if the server sent one, is read after the send stops."""
    start = time.monotonic()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: read what the server said
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, socket.timeout, TimeoutError):
            pass
    elapsed = time.monotonic() - start
    if not data.startswith(b"HTTP/"):
        return Reply("connect", None, None, elapsed, {}, "connection closed without an answer")
    status = int(data.split(b" ", 2)[1])
    return Reply(status_kind(status), status, None, elapsed, {})
