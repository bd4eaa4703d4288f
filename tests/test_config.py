"""Settings: frozen, validated, read from the environment in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkwise.config import AppSettings
from forkwise.errors import ConfigError
from forkwise.matrix.run.runner import load_profile, parse_only
from forkwise.servers import Deployment
from forkwise.servers import get as get_server
from forkwise.strategies import registry

BASE = dict(strategy="lazy", model_spec=Path("/x/spec.json"), database_url="sqlite:///x.db", run_dir=Path("/x"))


def test_environ_round_trip():
    settings = AppSettings(**BASE, max_batch=8, preload_app=True)
    assert AppSettings.from_environ(settings.to_environ()) == settings


@pytest.mark.parametrize("name, value, message", [
    ("FORKWISE_MAX_INSTANCES", "0", "at least 1"),
    ("FORKWISE_MAX_INSTANCES", "many", "whole number"),
    ("FORKWISE_PRELOAD_APP", "maybe", "true or false"),
    ("FORKWISE_MAX_WAIT_MS", "-1", "above 0"),
])
def test_bad_values_name_the_variable(name, value, message):
    env = AppSettings(**BASE).to_environ() | {name: value}
    with pytest.raises(ConfigError, match=f"{name}.*{message}|{message}"):
        AppSettings.from_environ(env)


def test_missing_settings_say_how_to_start():
    with pytest.raises(ConfigError, match="forkwise serve"):
        AppSettings.from_environ({})


def test_adapters_translate_needs_without_strategy_names(tmp_path):
    settings = AppSettings(**{**BASE, "run_dir": tmp_path})
    deployment = Deployment(settings=settings, server="uwsgi", workers=3, port=9000)
    lazy = get_server("uwsgi").plan(deployment, registry.get("lazy").needs)
    preload = get_server("uwsgi").plan(deployment, registry.get("preload").needs)
    assert "--lazy-apps" in lazy.argv and "--lazy-apps" not in preload.argv
    assert lazy.argv[lazy.argv.index("--http-socket") + 1] == "127.0.0.1:9000"
    threads = Deployment(settings=settings, server="uwsgi-threads", workers=3, port=9000,
                         threads=get_server("uwsgi-threads").in_flight(0))  # the setting's own
    threaded = get_server("uwsgi-threads").plan(threads, registry.get("lazy").needs)
    assert threaded.argv[threaded.argv.index("--threads") + 1] == "4"
    plan = get_server("gunicorn-gthread").plan(deployment, registry.get("preload").needs)
    config = next(iter(plan.files.values()))
    assert "preload_app = True" in config and "worker_class = 'gthread'" in config and "workers = 3" in config
    assert "bind = '127.0.0.1:9000'" in config


def test_profiles_load_and_only_filters():
    profile = load_profile("default")
    assert len(profile.cells) == len({c.id for c in profile.cells}) >= 32
    cells = profile.select(parse_only(["strategy=lazy,preload", "server=uwsgi"]))
    assert {(c.strategy, c.server) for c in cells} == {("lazy", "uwsgi"), ("preload", "uwsgi")}


@pytest.mark.parametrize("items, message", [
    (["color=red"], "unknown axis"),
    (["lazy"], "AXIS=VALUE"),
])
def test_only_errors(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_only(items)


def test_unknown_profile_lists_profiles(tmp_path):
    with pytest.raises(ConfigError, match="quick"):
        load_profile("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('[axes]\nstrategy = ["lazy"]\nserver = ["apache"]\nworkers = [2]\nmodel = ["default"]\n')
    with pytest.raises(ConfigError, match="apache"):
        load_profile(str(bad))
