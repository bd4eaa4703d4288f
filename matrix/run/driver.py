"""What the two built-in load drivers share: closed loop (load.py) and open loop (open_loop.py).

Both run as a child (child.py's protocol: ``python -m MODULE PLAN RESULT``) against a loopback URL:
the target and bodies in the plan (``loopback_target``, ``driver_plan``), the requests built from it
(``post_requests``), responses read the same way (``read_response``), latencies summarised the same
way (``percentiles_ms``), and one JSON result handed back (``driver_main`` in the child,
``run_driver`` in the caller).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from forkwise.errors import ChildError, ForkwiseError
from forkwise.matrix.run.child import ChildRun, Deadline, child_main, module_command, run_child

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STOP_GRACE_S = 2.0  # a driver holds nothing but sockets: a short grace on the way out


class LoadError(ForkwiseError):
    """Bad arguments, or the load generator failed, overran its deadline or reported garbage."""


def loopback_target(url: str) -> dict[str, Any]:
    """Where a driver sends (host, port, netloc, path), from a loopback http:// URL; LoadError for any other."""
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise LoadError(f"bad port in load URL {url!r}") from exc
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise LoadError(f"load URL must be http:// on loopback ({', '.join(sorted(LOOPBACK_HOSTS))}); got {url!r}")
    return {"host": parts.hostname, "port": port, "netloc": parts.netloc,
            "path": (parts.path or "/") + (f"?{parts.query}" if parts.query else "")}


def driver_plan(target: dict[str, Any], bodies: list[bytes], **settings: Any) -> dict[str, Any]:
    """A driver child's plan: its target (loopback_target), its bodies, and the driver's own settings."""
    return {**target, "bodies": [base64.b64encode(b).decode() for b in bodies], **settings}


def run_driver(module: str, plan: dict[str, Any], deadline: Deadline, what: str) -> ChildRun[dict[str, Any]]:
    """Run a driver child (`module`, entry ``driver_main``) on its plan; its result and CPU time.
    LoadError when it fails, overruns its deadline or hands back no JSON object."""
    try:
        return run_child(module_command(module), json.dumps(plan), deadline, _json_object, what=what,
                         stop_grace_s=STOP_GRACE_S)
    except ChildError as exc:
        raise LoadError(str(exc)) from exc


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def driver_main(argv: list[str], measure: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> int:
    """A driver child's entry (``python -m MODULE PLAN RESULT``): dies with its caller, runs
    ``measure(plan)`` in one event loop, hands back what it returns."""
    from forkwise.procs import die_with_parent

    die_with_parent()
    return child_main(argv, lambda plan: asyncio.run(measure(plan)))


def post_requests(plan: dict[str, Any]) -> list[bytes]:
    """The plan's bodies as whole HTTP/1.1 POST requests to its target, ready to write."""
    head = f"POST {plan['path']} HTTP/1.1\r\nHost: {plan['netloc']}\r\nContent-Type: application/json\r\n"
    return [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b
            for b in (base64.b64decode(x) for x in plan["bodies"])]


def percentiles_ms(lat_s: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99, max and mean in ms of a sorted list of seconds."""
    if not lat_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    n = len(lat_s)
    p50, p90, p99 = (lat_s[max(0, math.ceil(p / 100 * n) - 1)] * 1000.0 for p in (50, 90, 99))
    return {"p50": p50, "p90": p90, "p99": p99, "max": lat_s[-1] * 1000.0, "mean": sum(lat_s) / n * 1000.0}


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return b"".join(parts)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Child process: read one response; returns (status, body, connection reusable)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, low = int(head[9:12]), head.lower()
    keep = b"\r\nconnection: close" not in low and b"\r\nconnection:close" not in low
    if head.startswith(b"HTTP/1.0") and b"\r\nconnection: keep-alive" not in low:
        keep = False
    k = low.find(b"\r\ncontent-length:")
    if k >= 0:
        body = await reader.readexactly(int(low[k + 17:low.index(b"\r\n", k + 2)]))
    elif status < 200 or status in (204, 304):
        body = b""
    elif b"\r\ntransfer-encoding: chunked" in low:
        body = await _read_chunked(reader)
    else:  # body delimited by close
        body, keep = await reader.read(), False
    return status, body, keep
