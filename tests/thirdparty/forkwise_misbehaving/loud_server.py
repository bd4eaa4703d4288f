"""A team's own server setting: Gunicorn's sync workers, plus a line of its own in the server log.

Registered through the `forkwise.servers` entry-point group (this package's pyproject.toml), with
no change inside forkwise: its name, its report rank, and a telling pattern that only its own line
matches, so the end-to-end test can show forkwise reads a log with the patterns of its server.
"""

from __future__ import annotations

from forkwise.servers.gunicorn import GunicornSync

# gunicorn calls any hook the config file defines: when_ready runs in the master once it listens.
LOUD_HOOK = '''

def when_ready(server):
    """Master process, once it listens."""
    server.log.info("forkwise-loud: master %s ready for %s workers", server.pid, server.num_workers)
'''


class LoudGunicornSync(GunicornSync):
    name = "gunicorn-sync-loud"
    summary = "Gunicorn, sync workers, saying in its log when its master is ready"
    hooks = GunicornSync.hooks + LOUD_HOOK
    telling_log_lines = (*GunicornSync.telling_log_lines, r"forkwise-loud: master \d+ ready")
