"""The processes a test started, found by a tag in their environment (whatever group or parent they
ended up in), so a check for leftovers sees this test's processes only, never other work on the host."""

from __future__ import annotations

import os
import secrets

import psutil

from forkwise.procs import tagged_processes

TAG_VAR = "FORKWISE_TEST_TAG"
SERVER_MARKERS = ("forkwise.webapp.wsgi", "forkwise.servers.uwsgi_main", "forkwise.modelserver")


def new_tag() -> str:
    return secrets.token_hex(8)


def tagged_env(tag: str) -> dict[str, str]:
    """This process's environment plus the tag: every process started with it inherits the tag."""
    return {**os.environ, TAG_VAR: tag}


def server_processes(tag: str) -> list[psutil.Process]:
    """Live server, worker and model-server processes that carry the tag."""
    found = []
    for proc in tagged_processes(TAG_VAR, tag):
        try:
            if any(m in " ".join(proc.cmdline()) for m in SERVER_MARKERS):
                found.append(proc)
        except psutil.Error:
            continue
    return found
