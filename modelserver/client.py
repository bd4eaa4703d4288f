"""Worker side of the model server: one connection per thread, a bounded wait, no hangs."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np

from forkwise.errors import ModelUnavailable
from forkwise.modelserver import protocol


class ModelClient:
    """Runs in a worker. Any failure to get an answer in time becomes ModelUnavailable (503)."""

    def __init__(self, socket_path: Path, timeout_s: float):
        self.socket_path = str(socket_path)
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise ModelUnavailable(f"model server not reachable ({exc.strerror or exc})") from None
            self._local.sock = sock
        return sock

    def close(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            self._local.sock = None
            sock.close()

    def _round_trip(self, batch: np.ndarray) -> np.ndarray:
        sock = self._connection()
        protocol.send_array(sock, protocol.REQUEST, batch)
        kind, payload = protocol.recv_frame(sock)
        if kind == protocol.FAILURE:
            raise ModelUnavailable(f"model server failed: {payload}")
        assert isinstance(payload, np.ndarray), "every frame but a failure carries rows"
        if kind != protocol.ANSWER or len(payload) != len(batch):
            raise protocol.ProtocolError(f"expected an answer of {len(batch)} rows, got {kind!r} of {len(payload)}")
        return payload

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Send instances (any shape; they travel flat), get one flat row per instance back.

        Retries once on a stale connection (inference has no side effects)."""
        for attempt in (1, 2):
            try:
                out = self._round_trip(batch)
                return out
            except TimeoutError:
                self.close()
                raise ModelUnavailable(f"model server gave no answer within {self.timeout_s} s") from None
            except (OSError, protocol.ProtocolError) as exc:
                self.close()
                if attempt == 2:
                    raise ModelUnavailable(f"model server connection failed ({exc})") from None
        raise AssertionError("unreachable")
