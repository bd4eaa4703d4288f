"""Server settings by name: the built-ins and any a team registers itself.

A team adds a server setting without editing forkwise, through the entry-point group
``forkwise.servers`` in its own package::

    [project.entry-points."forkwise.servers"]
    my-server = "my_package.my_module:MyServer"
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from forkwise.errors import ConfigError, UnknownNameError
from forkwise.servers.base import ServerAdapter

GROUP = "forkwise.servers"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def adapter_class(name: str) -> type[ServerAdapter]:
    """The adapter class registered under ``name``; the error lists the valid names."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownNameError("server", name, eps)
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, ServerAdapter)):
        raise ConfigError(f"entry point {name!r} in {GROUP} is not a forkwise ServerAdapter subclass")
    if cls.name != name:
        raise ConfigError(f"server adapter class {cls.__qualname__} says name={cls.name!r}, registered as {name!r}")
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
    classes = [adapter_class(name) for name in _entry_points()]
    return [c.name for c in sorted(classes, key=lambda c: (c.report_rank, c.name))]
