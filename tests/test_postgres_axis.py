"""The database axis without a server: cell ids, settings, profiles, skipping, the report's section."""

from __future__ import annotations

import dataclasses

import pytest

from forkwise import postgres
from forkwise.config import DB_RESET_POLICIES, AppSettings
from forkwise.errors import ConfigError, PostgresMissing
from forkwise.matrix.analysis.controls import control_key
from forkwise.matrix.analysis.ordering import combination_label, combinations
from forkwise.matrix.publish.database_report import database_section
from forkwise.matrix.publish.document import Table
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.types import CellRecord, Verdict
from forkwise.matrix.run import cell_process, runner, scenarios
from forkwise.matrix.run.profile import _product
from forkwise.strategies import registry
from test_records import make_record  # tests/ is on sys.path (no __init__.py)


def test_cell_ids_name_the_database_only_when_it_is_not_the_default():
    assert Cell(strategy="lazy", server="uwsgi").id == "lazy/uwsgi/w2/default/cpu/steady"
    assert (Cell(strategy="preload-import", server="uwsgi", database="postgresql", db_reset="none",
                 db_in_master=True).id
            == "preload-import/uwsgi/w2/default/cpu/postgresql/reset-none/db-in-master/steady")
    record = make_record(database="postgresql-unix", db_reset="dispose")
    assert record.cell_id == "lazy/uwsgi/w2/default/cpu/postgresql-unix/reset-dispose/steady"
    assert record.database_setting == "postgresql-unix, reset dispose"


def test_older_records_without_database_fields_still_load():
    data = make_record().to_dict()
    for name in ("database", "db_reset", "db_in_master", "db_connections_peak", "db_server_log"):
        del data[name]
    back = CellRecord.from_dict(data)
    assert back.database == "sqlite" and back.db_connections_peak is None and back.database_setting == ""


def test_settings_travel_through_the_environment(tmp_path):
    settings = AppSettings(strategy="lazy", model_spec=tmp_path / "s.json", database_url="sqlite://", run_dir=tmp_path,
                           db_reset="nullpool", db_in_master=True)
    back = AppSettings.from_environ(settings.to_environ())
    assert back.db_reset == "nullpool" and back.db_in_master is True
    with pytest.raises(ConfigError, match="FORKWISE_DB_RESET: expected one of"):
        dataclasses.replace(settings, db_reset="sometimes")


def test_the_database_profile_crosses_every_reset_policy_with_a_query_in_the_master():
    profile = runner.load_profile("database")
    hazard = [c for c in profile.cells if c.db_in_master]
    assert {c.db_reset for c in hazard} == set(DB_RESET_POLICIES)
    assert {c.database for c in hazard} == {"postgresql", "postgresql-unix"}
    # The hazard needs a master that runs the app before fork: every such strategy preloads.
    assert all(registry.get(c.strategy).needs.preload_app for c in hazard)
    assert {c.scenario for c in profile.cells} >= {"steady", "db-contention", "restart-database"}
    assert set(registry.names()) <= {c.strategy for c in profile.cells if c.database == "postgresql"}


def test_a_restart_needs_a_database_server():
    lazy = registry.get("lazy")
    assert not scenarios.SCENARIOS["restart-database"].fits(lazy, "sqlite")
    assert scenarios.SCENARIOS["restart-database"].fits(lazy, "postgresql")
    with pytest.raises(ConfigError, match="needs a database server"):
        scenarios.get("restart-database", lazy)
    cells = _product({"strategy": ["lazy"], "server": ["uwsgi"], "workers": [2], "model": ["default"],
                             "database": ["sqlite", "postgresql"], "scenario": ["restart-database"]})
    assert [c.database for c in cells] == ["postgresql"]


def test_bad_database_axis_values_are_refused():
    block = {"strategy": ["lazy"], "server": ["uwsgi"], "workers": [2], "model": ["default"]}
    with pytest.raises(ConfigError, match="axis database"):
        _product({**block, "database": ["mysql"]})
    with pytest.raises(ConfigError, match="axis db_in_master"):
        _product({**block, "db_in_master": ["yes"]})


def test_cells_pass_their_database_settings_to_the_cell_process(tmp_path):
    cell = runner.Cell(strategy="preload-import", server="uwsgi", workers=2, model="default",
                       database="postgresql-unix", db_reset="none",
                       db_in_master=True)
    plan = cell_process.cell_plan(cell, runner.load_profile("database"))
    assert plan.database == "postgresql-unix"
    assert plan.db_reset == "none" and plan.db_in_master
    plain = cell_process.cell_plan(runner.Cell(strategy="lazy", server="uwsgi", workers=2, model="default"),
                                   runner.load_profile("quick"))
    assert not plain.db_in_master


def test_a_host_without_postgresql_skips_those_cells_with_the_reason(monkeypatch):
    def missing():
        raise PostgresMissing("PostgreSQL is not installed: no initdb")

    monkeypatch.setattr(postgres, "find_binaries", missing)
    cells = [runner.Cell(strategy="lazy", server="uwsgi", workers=2, model="default"),
             runner.Cell(strategy="lazy", server="uwsgi", workers=2, model="default", database="postgresql")]
    kept, skipped = runner.skip_database_cells(cells)
    assert kept == cells[:1]
    assert skipped["cells"] == [cells[1].id] and "not installed" in skipped["reason"]


def test_a_postgresql_cell_has_its_own_control_and_verdict_matrix():
    sqlite, pg = make_record(), make_record(database="postgresql")
    assert control_key(sqlite) != control_key(pg)
    labels = [combination_label(c) for c in combinations([sqlite, pg])]
    assert labels == ["2 workers, model default, device cpu, scenario steady",
                      "2 workers, model default, device cpu, database postgresql, scenario steady"]


def test_the_database_section_shows_peaks_what_clients_saw_and_what_the_server_logged():
    assert database_section([make_record()]) == []  # SQLite with the defaults: no section
    broken = make_record(strategy="preload-import", verdict=Verdict.ERROR, database="postgresql", db_reset="none",
                         db_in_master=True, db_connections_peak=3,
                         db_server_log=("LOG:  SSL error: decryption failed or bad record mac",),
                         evidence=dataclasses.replace(make_record().evidence, findings=(
                             "1 verification answers were 5xx",
                             "HTTP 503: the database is unavailable (consuming input failed: SSL error: ...)")))
    safe = make_record(database="postgresql", db_connections_peak=2)
    table = [b for b in database_section([safe, broken]) if isinstance(b, Table)][0]
    rows = {row[0]: row for row in table.rows}
    row = rows[broken.cell_id]
    assert row[1] == "ERROR" and row[5] == "3" and "SSL error" in row[7] and "bad record mac" in row[8]
    assert rows[safe.cell_id][7] == "-" and rows[safe.cell_id][8] == "nothing"
