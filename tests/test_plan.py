"""A cell's plan, declared once (forkwise.matrix.run.plan): the `forkwise cell` flags, the JSON the
matrix runner hands a cell process and the profile defaults all come from that declaration."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from forkwise import cli
from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import axes
from forkwise.matrix.run import cell_process, runner
from forkwise.matrix.run.plan import CellPlan, cli_fields, default_of, settings_fields

PACKAGE = Path(cli.__file__).resolve().parent

# Every setting away from its default, each of a kind of its own.
BUSY = CellPlan.of(
    strategy="child-process-batched", server="gunicorn-gthread", workers=3, model="tiny", device="gpu",
    backend="jax", gpu_policy="fraction", boot_timeout_s=45.5, request_timeout_s=2.25, load_levels=(1, 8, 32),
    warmup_s=0.0, duration_s=1.5, intervals=2, driver="builtin", max_batch=16, max_wait_ms=2.5,
    batch_sizes="1,8,32", scenario="kill-worker", scenario_duration_s=3.0, profile_dir=Path("/tmp/prof"),
    probe_reference_ms=12.345, quiet_budget_s=0.0, database="postgresql-unix", db_reset="nullpool",
    db_in_master=True, runtime_threads="per-worker", in_flight=16, open_loop=True, rates=(10.0, 20.5), rate_steps=3,
    p99_budget_ms=50.0, soak_duration_s=30.0, soak_fraction=0.25,
)


def parse_cell(argv: list[str]):
    return cli.build_parser().parse_args(["cell", *argv])


def test_a_plan_round_trips_through_the_command_line():
    for plan in (CellPlan.of(strategy="lazy", server="uwsgi"), BUSY):
        assert CellPlan.from_args(parse_cell(plan.to_argv())) == plan


def test_a_plan_round_trips_through_json():
    with_spec = dataclasses.replace(BUSY, spec_path=Path("/h/spec.json"))
    for plan in (CellPlan.of(strategy="lazy", server="uwsgi"), BUSY, with_spec):
        assert CellPlan.from_json(plan.to_json()) == plan


def test_every_plan_field_reaches_the_command_line_or_is_json_only():
    flagged = {f.name for f in cli_fields()}
    assert {f.name for f in settings_fields()} - flagged == {"spec_path", "verify_requests", "worker_timeout_s"}
    # Every flag differs from its default in BUSY: the round trip above covers each one; so does every axis.
    assert all(getattr(BUSY, name) != default_of(name) for name in flagged)
    assert all(BUSY.cell[a.name] != a.default for a in axes())


def test_the_flags_users_type_keep_their_names():
    args = parse_cell(["--strategy", "lazy", "--server", "uwsgi", "--load", "1,8", "--duration", "2",
                       "--warmup", "0", "--intervals", "3", "--request-timeout", "5", "--boot-timeout", "60",
                       "--runtime-threads", "2", "--quiet-budget", "1", "--scenario-duration", "4", "--db-in-master"])
    plan = CellPlan.from_args(args)
    assert (plan.load_levels, plan.duration_s, plan.warmup_s, plan.intervals) == ((1, 8), 2.0, 0.0, 3)
    assert (plan.request_timeout_s, plan.boot_timeout_s, plan.runtime_threads) == (5.0, 60.0, "2")
    assert (plan.quiet_budget_s, plan.scenario_duration_s, plan.db_in_master) == (1.0, 4.0, True)


def test_the_command_line_defaults_are_the_plans():
    args = parse_cell([])
    for f in cli_fields():
        want = None if f.default is dataclasses.MISSING else f.default
        assert getattr(args, f.name) == want, f.name


def test_bad_flag_values_are_refused_by_the_declarations_checks(capsys):
    for argv in (["--load", "0,8"], ["--rates", "-1"], ["--duration", "0"], ["--driver", "ab"], ["--workers", "two"]):
        with pytest.raises(SystemExit):
            parse_cell(argv)
    # An axis's value is checked as its axis declares, with one error line that says what to fix.
    for argv, said in ((["--workers", "0"], "axis workers: must be at least 1"),
                       (["--runtime-threads", "all"], "axis runtime_threads: expected default, per-worker"),
                       (["--strategy", "nope"], "axis strategy: expected one of")):
        with pytest.raises(ConfigError, match=said):
            CellPlan.from_args(parse_cell(["--strategy", "lazy", "--server", "uwsgi", *argv]))
    with pytest.raises(ConfigError, match="plan: intervals: must be at least 1"):
        CellPlan.of(strategy="lazy", server="uwsgi", intervals=0)


def test_an_unknown_or_bad_json_key_is_a_config_error_naming_the_valid_ones():
    data = json.loads(CellPlan.of(strategy="lazy", server="uwsgi").to_json())
    with pytest.raises(ConfigError, match=r"unknown keys \['durations'\]; valid keys: strategy, server, workers"):
        CellPlan.from_dict({**data, "durations": 3})
    with pytest.raises(ConfigError, match="workers: expected a whole number"):
        CellPlan.from_dict({**data, "workers": "2"})
    with pytest.raises(ConfigError, match=r"missing keys \['server'\]"):
        CellPlan.from_dict({"strategy": "lazy"})
    with pytest.raises(ConfigError, match="not JSON"):
        CellPlan.from_json("{")


def test_cell_takes_its_plan_from_a_file_and_refuses_flags_beside_it(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(BUSY.to_json())
    assert cli._cell_plan(parse_cell(["--plan", str(path)]), tmp_path) == BUSY
    with pytest.raises(ConfigError, match="also given: --workers"):
        cli._cell_plan(parse_cell(["--plan", str(path), "--workers", "4"]), tmp_path)
    with pytest.raises(ConfigError, match="--strategy and --server are required"):
        cli._cell_plan(parse_cell([]), tmp_path)


def test_the_runner_hands_the_profile_to_the_cell_as_a_plan():
    profile = runner.load_profile("open-loop")
    cell = profile.cells[0]
    plan = cell_process.cell_plan(cell, profile)
    assert plan.load_levels == profile.load.levels and plan.duration_s == profile.load.duration_s
    assert plan.open_loop and plan.p99_budget_ms == profile.recommend.p99_ms
    assert plan.request_timeout_s == profile.limits.request_timeout_s
    assert CellPlan.from_json(plan.to_json()) == plan
    argv = cell_process.cell_command(Path("/t/plan.json"), Path("/t/record.json"), Path("/h"))
    assert argv[-4:] == ["--plan", "/t/plan.json", "--record-out", "/t/record.json"]


def test_profile_and_plan_defaults_are_one():
    load, limits = runner.LoadSettings(), runner.Limits()
    for name in ("warmup_s", "duration_s", "intervals", "scenario_duration_s", "rates", "rate_steps"):
        assert getattr(load, name) == default_of(name), name
    for name in ("request_timeout_s", "boot_timeout_s"):
        assert getattr(limits, name) == default_of(name), name


def test_no_other_module_declares_the_plans_default_numbers():
    """The defaults that once disagreed (a cell's 4.0 s and 4 intervals, the profile's 2.4 s and 3)
    are declared in matrix/plan.py only."""
    pattern = re.compile(r"\b(duration_s|intervals|rate_steps|boot_timeout_s|request_timeout_s|warmup_s|steps"
                         r"|scenario_duration_s|quiet_budget_s)\s*(?::[^=\n]*)?=\s*[\d.]+\s*(?:#|$)", re.M)
    sources = [PACKAGE / "cli.py", *sorted((PACKAGE / "matrix").glob("*.py"))]
    found = {f"{path.name}: {m.group(1)}" for path in sources if path.name != "plan.py"
             for m in pattern.finditer(path.read_text())}
    # Each open-loop rate's own warm-up, a scenario's, and the whole run's quiet budget (the
    # profile's own choice; a cell gets a share of it): settings of their own, not the cell's.
    assert found <= {"open_loop.py: warmup_s", "scenarios.py: warmup_s", "profile.py: quiet_budget_s"}
    assert "--duration\", type=" not in (PACKAGE / "cli.py").read_text()


def test_a_profile_typo_names_the_valid_keys(tmp_path):
    axes = '[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\nworkers = [2]\nmodel = ["default"]\n'
    path = tmp_path / "typo.toml"
    for extra, match in (("[load]\ndurtion_s = 1.0\n", r"unknown \[load\] keys \['durtion_s'\]; valid keys: levels"),
                         ("[limits]\nboot_timeout = 9\n", r"unknown \[limits\] keys \['boot_timeout'\]"),
                         ("[lod]\nlevels = [1]\n", r"unknown keys \['lod'\]; valid keys: description")):
        path.write_text(axes + extra)
        with pytest.raises(ConfigError, match=match):
            runner.load_profile(str(path))
    path.write_text(axes + "[limits]\nboot_timeout_s = 0\n")  # checked by the plan's own check
    with pytest.raises(ConfigError, match="limits.boot_timeout_s: must be above 0"):
        runner.load_profile(str(path))
    path.write_text(axes.replace("[axes]\n", "[axes]\nworker = [2]\n"))
    with pytest.raises(ConfigError, match="unknown axes"):
        runner.load_profile(str(path))


def test_a_missing_profile_file_is_called_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"profile file .*nope.toml does not exist; profiles: .*quick"):
        runner.load_profile(str(tmp_path / "nope.toml"))


def test_every_shipped_profile_still_loads():
    for name in runner.profile_names():
        assert runner.load_profile(name).cells
