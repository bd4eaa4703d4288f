"""Server adapters by name. Each translates a strategy's needs into a real server's configuration."""

from __future__ import annotations

from forkwise.errors import UnknownNameError
from forkwise.servers.base import Deployment, LaunchPlan, ServerAdapter, ServerTimeouts
from forkwise.servers.gunicorn import GunicornGthread, GunicornSync
from forkwise.servers.uwsgi import Uwsgi, UwsgiThreads

ADAPTERS: dict[str, ServerAdapter] = {a.name: a for a in (GunicornSync(), GunicornGthread(), Uwsgi(), UwsgiThreads())}


def get(name: str) -> ServerAdapter:
    if name not in ADAPTERS:
        raise UnknownNameError("server", name, ADAPTERS)
    return ADAPTERS[name]


def names() -> list[str]:
    return list(ADAPTERS)


__all__ = ["ADAPTERS", "Deployment", "LaunchPlan", "ServerAdapter", "ServerTimeouts", "get", "names"]
