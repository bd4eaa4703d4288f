"""Keeps exactly one model server running; restarts it when it dies.

Started by the web server's master (fresh interpreter, no ML runtime imported here).
Exits, stopping its server, on SIGTERM or when the master that started it dies.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from types import FrameType

from forkwise.procs import die_with_parent, stop_process

MAX_BACKOFF_S = 5.0


def supervise(server_args: list[str]) -> int:
    die_with_parent()
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    backoff = 0.2
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "forkwise.modelserver.server", *server_args])
        try:
            while child.poll() is None and not stopping:
                time.sleep(0.1)
        finally:
            stop_process(child, grace_s=3)
        if stopping:
            break
        print(f"forkwise supervisor: model server {child.pid} exited ({child.returncode}); restarting",
              file=sys.stderr, flush=True)
        # Back off only when it keeps dying at once; a long-lived server restarts immediately.
        backoff = 0.2 if time.monotonic() - started > 10 else min(MAX_BACKOFF_S, backoff * 2)
        time.sleep(backoff)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m forkwise.modelserver.supervisor")
    _, server_args = parser.parse_known_args()
    raise SystemExit(supervise(server_args))


if __name__ == "__main__":
    main()
