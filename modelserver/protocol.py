"""Wire format between a worker and the model server: a fixed header, then float32 bytes.

Request:  b"FWRQ" rows:u32 width:u32, then rows*width float32 (little endian)
Answer:   b"FWOK" rows:u32 width:u32, then rows*width float32
Failure:  b"FWER" length:u32 0:u32, then a UTF-8 message

No pickle, no JSON: nothing that came from HTTP is ever deserialised as an object.
"""

from __future__ import annotations

import socket
import struct

import numpy as np

HEADER = struct.Struct("<4sII")
REQUEST, ANSWER, FAILURE = b"FWRQ", b"FWOK", b"FWER"
MAX_ROWS = 1 << 16
MAX_WIDTH = 1 << 20


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return bytes(buf)


def send_array(sock: socket.socket, kind: bytes, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype="<f4").reshape(len(array), -1)
    sock.sendall(HEADER.pack(kind, array.shape[0], array.shape[1]) + array.tobytes())


def send_failure(sock: socket.socket, message: str) -> None:
    data = message.encode("utf-8", "replace")[:4096]
    sock.sendall(HEADER.pack(FAILURE, len(data), 0) + data)


def recv_frame(sock: socket.socket) -> tuple[bytes, np.ndarray | str]:
    """One frame: (kind, rows as a 2-D float32 array) or (FAILURE, message)."""
    kind, a, b = HEADER.unpack(recv_exact(sock, HEADER.size))
    if kind == FAILURE:
        return kind, recv_exact(sock, a).decode("utf-8", "replace")
    if kind not in (REQUEST, ANSWER):
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if a > MAX_ROWS or b > MAX_WIDTH:
        raise ProtocolError(f"frame of {a}x{b} is over the limits")
    data = recv_exact(sock, a * b * 4)
    return kind, np.frombuffer(data, dtype="<f4").reshape(a, b)
