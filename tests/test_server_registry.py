"""Server settings by name (forkwise.servers.registry): the built-ins and a team's own, through the
`forkwise.servers` entry-point group, in the order their classes declare."""

from __future__ import annotations

import pytest

from forkwise import plugins, servers
from forkwise.errors import ConfigError, UnknownNameError
from forkwise.servers import registry
from forkwise.servers.base import ServerAdapter
from forkwise.servers.gunicorn import GunicornSync

BUILTINS = ["gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent", "uwsgi", "uwsgi-threads", "uwsgi-gevent"]


class FakeEP:
    def __init__(self, name, obj):
        self.name, self.obj = name, obj

    def load(self):
        return self.obj


@pytest.fixture
def registered(monkeypatch):
    """Replace the entry-point group's members with the given (name, class) pairs."""
    def register(*pairs):
        plugins.registered.cache_clear()
        monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEP(name, cls) for name, cls in pairs])

    yield register
    plugins.registered.cache_clear()


def adapter(name: str, rank: int | None = None, **attributes) -> type[ServerAdapter]:
    if rank is not None:
        attributes["report_rank"] = rank
    return type(f"Adapter_{name}", (ServerAdapter,), {"name": name, **attributes})


def test_the_builtins_register_through_the_entry_point_group_in_their_classes_order():
    assert [n for n in servers.names() if n in BUILTINS] == BUILTINS
    ranks = [servers.get(n).report_rank for n in BUILTINS]
    assert ranks == sorted(ranks)
    assert isinstance(servers.get("gunicorn-sync"), GunicornSync)


def test_the_order_comes_from_the_classes_not_the_registration(registered):
    registered(("zeta", adapter("zeta", 5)), ("unranked-b", adapter("unranked-b")), ("alpha", adapter("alpha", 50)),
               ("unranked-a", adapter("unranked-a")))
    assert registry.names() == ["zeta", "alpha", "unranked-a", "unranked-b"]  # rank, then by name


def test_an_unknown_server_is_an_error_listing_the_valid_names():
    with pytest.raises(UnknownNameError) as info:
        servers.get("gunicorn-snyc")
    message = str(info.value)
    assert "unknown server 'gunicorn-snyc'" in message and all(name in message for name in BUILTINS)


def test_a_registered_object_must_be_an_adapter_with_its_name_and_valid_patterns(registered):
    registered(("not-adapter", object), ("misnamed", adapter("other")),
               ("bad-pattern", adapter("bad-pattern", telling_log_lines=("WORKER (TIMEOUT",))))
    with pytest.raises(ConfigError, match="not a forkwise ServerAdapter"):
        registry.get("not-adapter")
    with pytest.raises(ConfigError, match="says name='other', registered as 'misnamed'"):
        registry.get("misnamed")
    with pytest.raises(ConfigError, match="telling_log_lines holds 'WORKER \\(TIMEOUT', not a regular expression"):
        registry.get("bad-pattern")
