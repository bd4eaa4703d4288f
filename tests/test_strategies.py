"""Each strategy's lifecycle, driven in-process the way the web app drives it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from forkwise import plugins
from forkwise.errors import ConfigError, ModelUnavailable, UnknownNameError
from forkwise.strategies import Strategy, registry
from forkwise.testing import wait_for_answer

MODEL_STRATEGIES = ["import-in-route", "preload", "preload-import", "lazy", "locked-singleton"]


def run_lifecycle(strategy: Strategy, spec) -> np.ndarray:
    """The order the app guarantees: preload (master, if preloaded), post_fork, predict."""
    if strategy.needs.preload_app:
        strategy.preload()
    strategy.post_fork()
    inputs, _ = spec.reference()
    return np.concatenate([strategy.predict(inputs[i : i + 1]) for i in range(8)])


@pytest.mark.parametrize("name", MODEL_STRATEGIES)
def test_model_strategies_answer_the_reference(name, settings_for, tiny_spec_path, tiny_spec):
    strategy = registry.get(name)(settings_for(name, tiny_spec_path), tiny_spec)
    out = run_lifecycle(strategy, tiny_spec)
    np.testing.assert_allclose(out, tiny_spec.reference()[1][:8], rtol=1e-5, atol=1e-6)
    strategy.on_exit()


def test_control_answers_its_constant_without_a_model(settings_for, tiny_spec_path, tiny_spec):
    strategy = registry.get("control")(settings_for("control", tiny_spec_path), tiny_spec)
    assert not strategy.serves_model
    out = run_lifecycle(strategy, tiny_spec)
    assert out.shape == (8, *tiny_spec.output_shape) and not out.any()


def test_locked_singleton_loads_once_under_concurrent_first_use(settings_for, tiny_spec_path, tiny_spec, monkeypatch):
    from forkwise.strategies import locked_singleton

    calls = []
    real = locked_singleton.load_predictor

    def counting(path, threads=0):
        calls.append(threading.get_ident())
        return real(path, threads)

    monkeypatch.setattr(locked_singleton, "load_predictor", counting)
    strategy = registry.get("locked-singleton")(settings_for("locked-singleton", tiny_spec_path), tiny_spec)
    x = tiny_spec.reference()[0][:1]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: strategy.predict(x), range(32)))
    assert len(calls) == 1
    assert all(np.array_equal(r, results[0]) for r in results)
    assert (strategy.settings.run_dir / "model-init.lock").exists()


@pytest.mark.parametrize("name, batch", [("child-process", 1), ("child-process-batched", 4)])
def test_child_process_serves_restarts_and_stops(name, batch, settings_for, tiny_spec_path, tiny_spec,
                                                 no_leftover_children):
    import psutil

    strategy = registry.get(name)(settings_for(name, tiny_spec_path, max_batch=batch, model_timeout_s=5), tiny_spec)
    strategy.preload()
    try:
        inputs, outputs = tiny_spec.reference()
        out = wait_for_answer(strategy, inputs[:3])
        np.testing.assert_allclose(out, outputs[:3], rtol=1e-5, atol=1e-6)
        # Concurrent requests (batched or not) each get their own rows back.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: strategy.predict(inputs[i : i + 1]), range(24)))
        np.testing.assert_allclose(np.concatenate(answers), outputs[:24], rtol=1e-5, atol=1e-6)
        # Kill the model server: requests fail fast with ModelUnavailable, then it comes back.
        server = [p for p in psutil.Process(strategy._supervisor.pid).children()
                  if "modelserver.server" in " ".join(p.cmdline())]
        assert len(server) == 1
        server[0].kill()
        server[0].wait(5)
        with pytest.raises(ModelUnavailable):
            strategy.predict(inputs[:1])
        np.testing.assert_allclose(wait_for_answer(strategy, inputs[:1]), outputs[:1], rtol=1e-5, atol=1e-6)
    finally:
        strategy.on_exit()
    assert strategy._supervisor.poll() is not None


def test_registry_lists_every_builtin():
    assert set(registry.names()) >= {
        "import-in-route", "preload", "preload-import", "lazy", "locked-singleton",
        "child-process", "child-process-batched", "control",
    }


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        registry.get("preloda")
    assert "preload" in str(info.value) and "lazy" in str(info.value)


def test_entry_point_group_admits_a_teams_strategy(monkeypatch):
    class Mine(Strategy):
        name = "mine"

    class FakeEP:
        def __init__(self, name, obj):
            self.name, self.obj = name, obj

        def load(self):
            return self.obj

    plugins.registered.cache_clear()
    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEP("mine", Mine), FakeEP("bad", object)])
    try:
        assert registry.get("mine") is Mine
        with pytest.raises(ConfigError, match="not a forkwise Strategy"):
            registry.get("bad")
    finally:
        plugins.registered.cache_clear()


def test_every_hook_names_its_process():
    for name in registry.names():
        cls = registry.get(name)
        for hook in ("preload", "post_fork", "predict", "on_exit"):
            doc = getattr(cls, hook).__doc__ or ""
            assert any(word in doc for word in ("master", "worker")), f"{name}.{hook} docstring names no process"
