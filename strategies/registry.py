"""Strategies by name: the built-ins and any a team registers itself.

A team adds a strategy without editing forkwise, through the entry-point group
``forkwise.strategies`` in its own package::

    [project.entry-points."forkwise.strategies"]
    my-strategy = "my_package.my_module:MyStrategy"
"""

from __future__ import annotations

from forkwise import plugins
from forkwise.strategies.base import Strategy

GROUP = "forkwise.strategies"


def names() -> list[str]:
    return sorted(plugins.registered(GROUP))


def get(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``; the error lists the valid names."""
    return plugins.load_class(GROUP, name, Strategy, "strategy")
