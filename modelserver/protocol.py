"""Wire format between a worker and the model server: a fixed header, then float32 bytes.

Request:  b"FWRQ" rows:u32 width:u32, then rows*width float32 (little endian)
Answer:   b"FWOK" rows:u32 width:u32, then rows*width float32
Failure:  b"FWER" length:u32 0:u32, then a UTF-8 message

A row is one instance flattened in C order, whatever the model's rank: the header carries
the row count and the width, and each side restores the shape it knows from the model's
spec: the model server the input shape (``unflatten``), a worker the output shape.

No pickle, no JSON: nothing that came from HTTP is ever deserialised as an object.
"""

from __future__ import annotations

import math
import socket
import struct

import numpy as np

HEADER = struct.Struct("<4sII")
REQUEST, ANSWER, FAILURE = b"FWRQ", b"FWOK", b"FWER"
MAX_ROWS = 1 << 16
MAX_WIDTH = 1 << 20


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return buf


def send_array(sock: socket.socket, kind: bytes, array: np.ndarray) -> None:
    """One frame in one system call where the socket takes it whole (header and rows, no copy)."""
    array = np.ascontiguousarray(array, dtype="<f4").reshape(len(array), -1)
    header = HEADER.pack(kind, array.shape[0], array.shape[1])
    data = array.data.cast("B")
    sent = sock.sendmsg([header, data])
    if sent < len(header) + len(data):  # a short write: the rest as sendall does it
        sock.sendall((header + data.tobytes())[sent:])


def unflatten(rows: np.ndarray, instance_shape: tuple[int, ...]) -> np.ndarray:
    """Flat rows (n, width) -> (n, *instance_shape); ProtocolError when the width does not fit."""
    width = math.prod(instance_shape)
    if rows.ndim != 2 or rows.shape[1] != width:
        raise ProtocolError(f"expected rows of {width} values (instance shape {list(instance_shape)}), "
                            f"got an array of shape {list(rows.shape)}")
    return rows.reshape(len(rows), *instance_shape)


def send_failure(sock: socket.socket, message: str) -> None:
    data = message.encode("utf-8", "replace")[:4096]
    sock.sendall(HEADER.pack(FAILURE, len(data), 0) + data)


def recv_frame(sock: socket.socket) -> tuple[bytes, np.ndarray | str]:
    """One frame: (kind, rows as a 2-D float32 array) or (FAILURE, message)."""
    kind, a, b = HEADER.unpack(recv_exact(sock, HEADER.size))
    if kind == FAILURE:
        return kind, bytes(recv_exact(sock, a)).decode("utf-8", "replace")
    if kind not in (REQUEST, ANSWER):
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if a > MAX_ROWS or b > MAX_WIDTH:
        raise ProtocolError(f"frame of {a}x{b} is over the limits")
    data = recv_exact(sock, a * b * 4)
    return kind, np.frombuffer(data, dtype="<f4").reshape(a, b)
