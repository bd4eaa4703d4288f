#!/usr/bin/env python3
"""Run a command as a slow host would: on one core, which a busy process competes for.

`tox -e slow` runs the test suite this way. Every process the command starts inherits the
one-core affinity, so the servers, the load driver and the tests share half a core each with
the busy process: TensorFlow's import takes two to three times as long as on the idle machine,
which is what a slower 2-core host does. The busy process is this script's own child, in its
own process group, and is stopped when the command ends, whatever happens.

    python scripts/slow_host.py pytest -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: slow_host.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True,
                            stdin=subprocess.DEVNULL)
    print(f"slow_host: pinned to core {core}, shared with a busy process (pid {busy.pid})", file=sys.stderr)
    try:
        return subprocess.call(argv)
    finally:
        os.killpg(busy.pid, signal.SIGKILL)
        busy.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
