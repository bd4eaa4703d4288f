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


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> Reply:
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        elapsed = time.monotonic() - start
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        kind = "ok" if 200 <= resp.status < 300 else "4xx" if resp.status < 500 else "5xx"
        return Reply(kind, resp.status, parsed, elapsed, dict(resp.getheaders()))
    except (socket.timeout, TimeoutError):
        return Reply("timeout", None, None, time.monotonic() - start, {}, f"no answer within {timeout_s} s")
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return Reply("connect", None, None, time.monotonic() - start, {}, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def post_json(host: str, port: int, path: str, payload: Any, timeout_s: float) -> Reply:
    return request(host, port, "POST", path, json.dumps(payload).encode(),
                   {"Content-Type": "application/json"}, timeout_s)
