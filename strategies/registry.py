"""Strategies by name: the built-ins and any a team registers itself.

A team adds a strategy without editing forkwise, through the entry-point group
``forkwise.strategies`` in its own package::

    [project.entry-points."forkwise.strategies"]
    my-strategy = "my_package.my_module:MyStrategy"
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from forkwise.errors import ConfigError, UnknownNameError
from forkwise.strategies.base import Strategy

GROUP = "forkwise.strategies"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


def get(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``; the error lists the valid names."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownNameError("strategy", name, eps)
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"entry point {name!r} in {GROUP} is not a forkwise Strategy subclass")
    if cls.name != name:
        raise ConfigError(f"strategy class {cls.__qualname__} says name={cls.name!r}, registered as {name!r}")
    return cls
