"""Server settings by name: the built-ins and any a team registers itself.

A team adds a server setting without editing forkwise, through the entry-point group
``forkwise.servers`` in its own package::

    [project.entry-points."forkwise.servers"]
    my-server = "my_package.my_module:MyServer"
"""

from __future__ import annotations

import re

from forkwise import plugins
from forkwise.errors import ConfigError
from forkwise.servers.base import ServerAdapter

GROUP = "forkwise.servers"


def adapter_class(name: str) -> type[ServerAdapter]:
    """The adapter class registered under ``name``; the error lists the valid names."""
    cls = plugins.load_class(GROUP, name, ServerAdapter, "server")
    _check_log_patterns(cls)
    return cls


def _check_log_patterns(cls: type[ServerAdapter]) -> None:
    """Every log pattern an adapter declares is a regular expression: found when it is loaded, not
    when a failing cell's log is read."""
    for attribute in ("telling_log_lines", "oom_log_lines", "oom_false_alarms"):
        for pattern in getattr(cls, attribute):
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ConfigError(f"server {cls.name!r}: {attribute} holds {pattern!r}, not a regular expression "
                                  f"({e})") from e


def get(name: str) -> ServerAdapter:
    """The adapter for the server setting ``name`` (adapters hold no state: a fresh one each time)."""
    return adapter_class(name)()


def names() -> list[str]:
    """Every registered server setting, in the order the classes declare (``report_rank``), then by name:
    the order of `forkwise strategies` and of every report."""
    classes = [adapter_class(name) for name in plugins.registered(GROUP)]
    return [c.name for c in sorted(classes, key=lambda c: (c.report_rank, c.name))]
