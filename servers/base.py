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
    threads: int = 1  # threads per worker; > 1 only for the threaded server settings
    host: str = "127.0.0.1"
    port: int = 8000
    timeouts: ServerTimeouts = field(default_factory=ServerTimeouts)
    max_requests: int = 0  # recycle a worker after this many requests (0: never)

    def __post_init__(self) -> None:
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
    """Base adapter. Subclasses set `name`, `threads`, their log's patterns, and implement `plan`.

    Registered in the ``forkwise.servers`` entry-point group (``forkwise.servers.registry``).
    """

    name: str = ""
    summary: str = ""
    kind: str = ""  # the family ("gunicorn", "uwsgi", a team's own), for reports
    threads: int = 1  # threads per worker this setting runs
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

    def plan(self, deployment: Deployment, needs: ServerNeeds) -> LaunchPlan:
        raise NotImplementedError

    @staticmethod
    def python() -> str:
        return sys.executable
