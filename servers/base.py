"""What every server adapter gets and gives.

An adapter reads a Deployment (what to run) and the strategy's ServerNeeds, and
returns a LaunchPlan: the command line, the environment and the files to write.
It holds no strategy logic: it only translates needs into server configuration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from forkwise.config import AppSettings
from forkwise.errors import ConfigError
from forkwise.strategies.base import ServerNeeds

WSGI_APP = "forkwise.webapp.wsgi:app"


DEFAULT_WORKERS = 2  # a deployment's worker processes unless told otherwise (the workers axis's default)
# Requests in flight per worker of the concurrent settings, unless the in_flight axis says.
DEFAULT_THREADS = 4  # the threaded settings' threads per worker
# The gevent settings' greenlets per worker (gunicorn's own default is 1000 connections): enough
# to hand the batching model server full batches (its max_batch is 32) from two workers, few enough
# that a worker's requests do not queue by the hundred behind one CPU-bound model call.
DEFAULT_GREENLETS = 64
DEFAULT_WORKER_TIMEOUT_S = 30  # gunicorn --timeout, uWSGI harakiri, unless told otherwise


@dataclass(frozen=True)
class ServerTimeouts:
    """Seconds. The worker timeout must exceed the longest legitimate request or boot."""

    worker_s: int = DEFAULT_WORKER_TIMEOUT_S  # gunicorn --timeout, uWSGI harakiri
    graceful_s: int = 5  # how long a stop waits for workers to finish


@dataclass(frozen=True)
class Deployment:
    """One deployment of the common app: which strategy, which server setting, where."""

    settings: AppSettings
    server: str
    workers: int = DEFAULT_WORKERS
    # Requests in flight per worker: its threads (gthread, uWSGI threads) or its greenlets (gevent's
    # worker_connections); 1 for a setting that serves one request at a time. The adapter's
    # `in_flight` resolves it.
    threads: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    timeouts: ServerTimeouts = field(default_factory=ServerTimeouts)
    max_requests: int = 0  # recycle a worker after this many requests (0: never)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"requests in flight per worker must be at least 1, got {self.threads}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1..65535, got {self.port}")


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]
    files: dict[Path, str] = field(default_factory=dict)  # written before launch

    def write_files(self) -> None:
        for path, text in self.files.items():
            path.write_text(text)


class ServerAdapter:
    """Base adapter. Subclasses set `name`, `threads` (and `in_flight_option` where it can be
    changed), their log's patterns, and implement `plan`.

    Registered in the ``forkwise.servers`` entry-point group (``forkwise.servers.registry``).
    """

    name: str = ""
    summary: str = ""
    kind: str = ""  # the family ("gunicorn", "uwsgi", a team's own), for reports
    threads: int = 1  # requests in flight per worker this setting runs unless told otherwise
    # The server's own option for requests in flight per worker ("threads", "worker_connections");
    # "": this setting serves one request at a time per worker, and the in_flight axis is an error.
    in_flight_option: ClassVar[str] = ""
    # Reports list server settings in this order, lower first; a setting that sets none comes after
    # the built-ins, by name.
    report_rank: ClassVar[int] = 1000
    # Regular expressions for this server's own lines in its log (the generic ones, such as Python
    # exceptions and fatal signals, are forkwise.matrix's): the lines that say why a cell failed
    # (worker timeouts, boot failures, dead workers) ...
    telling_log_lines: ClassVar[tuple[str, ...]] = ()
    # ... the lines that show it ran out of memory ...
    oom_log_lines: ClassVar[tuple[str, ...]] = ()
    # ... and its text that reads like out-of-memory but is no evidence of it (a guess), removed
    # from a line before the out-of-memory patterns look at it.
    oom_false_alarms: ClassVar[tuple[str, ...]] = ()

    def in_flight(self, requested: int) -> int:
        """Requests in flight per worker: `requested` (the in_flight axis), or this setting's own
        default for 0. A setting that serves one request at a time refuses any other number: it
        would be silently ignored, and the cell would measure something other than it says."""
        if requested < 0:
            raise ConfigError(f"requests in flight per worker must be 0 (the setting's own) or more, got {requested}")
        if not requested:
            return self.threads
        if not self.in_flight_option:
            raise ConfigError(f"server setting {self.name} serves one request at a time per worker: in_flight "
                              f"{requested} needs a threaded or gevent setting (or in_flight 0)")
        return requested

    def plan(self, deployment: Deployment, needs: ServerNeeds) -> LaunchPlan:
        raise NotImplementedError

    @staticmethod
    def python() -> str:
        return sys.executable
