"""Classes registered through an entry-point group, by name: the one loader of forkwise's plugins
(strategies in ``forkwise.strategies``, server adapters in ``forkwise.servers``). A team adds one
without editing forkwise, in its own package's ``[project.entry-points."<group>"]``."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from forkwise.errors import ConfigError, UnknownNameError

T = TypeVar("T")


@cache
def registered(group: str) -> dict[str, EntryPoint]:
    """The group's entry points by name (read once: the installed distributions do not change)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_class(group: str, name: str, base: type[T], kind: str) -> type[T]:
    """The class registered under `name`: a subclass of `base` whose own `name` is the one it is
    registered as; a ConfigError says what is wrong, and an unknown name lists the valid ones."""
    eps = registered(group)
    if name not in eps:
        raise UnknownNameError(kind, name, eps)
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"entry point {name!r} in {group} is not a forkwise {base.__name__} subclass")
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"{kind} class {cls.__qualname__} says name={getattr(cls, 'name', None)!r}, "
                          f"registered as {name!r}")
    return cls
