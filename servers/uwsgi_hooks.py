"""Imported by uWSGI (``--import``): wires uWSGI's hooks to forkwise.webapp.process.

With the app loaded in the master, ``post_fork_hook`` runs in each worker after fork.
With lazy-apps the worker builds the app itself, and the hook finds nothing to do.
"""

import uwsgi

from forkwise.webapp import process


def _post_fork() -> None:
    """Worker process, right after uWSGI forks it."""
    process.worker_started()


uwsgi.post_fork_hook = _post_fork
uwsgi.atexit = process.worker_exit
