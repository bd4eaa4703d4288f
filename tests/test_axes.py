"""A cell's axes are declared once (forkwise.matrix.records.axes): one more Axis in the declaration
reaches profile parsing, the command line, the plan's JSON, the cell id, the record (and its
schema) and the report's columns, with no other change."""

from __future__ import annotations

import json

import pytest

from forkwise import checks, cli
from forkwise.errors import ConfigError
from forkwise.matrix import verdicts
from forkwise.matrix.publish.report_table import render_csv, table_rows
from forkwise.matrix.records import axes
from forkwise.matrix.records.record_schema import json_schema
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run import cell_process
from forkwise.matrix.run.plan import CellPlan
from forkwise.matrix.run.profile import load_profile, parse_only

COLOUR = axes.Axis("colour", "a throwaway axis of this test", checks.TEXT, "plain",
                   checks.one_of(("plain", "striped")), id_part=lambda v: f"colour-{v}",
                   describe=lambda v: "" if v == "plain" else f"colour {v}", deployment=False)


@pytest.fixture
def colour_axis(monkeypatch):
    """The declaration with one more axis, before the scenario (the cell id ends with it)."""
    declared = axes.AXES
    monkeypatch.setattr(axes, "AXES", (*declared[:-1], COLOUR, declared[-1]))
    return COLOUR


def test_a_new_axis_reaches_the_profile_and_only(colour_axis, tmp_path):
    path = tmp_path / "colours.toml"
    path.write_text('[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\nworkers = [2]\nmodel = ["default"]\n'
                    'colour = ["plain", "striped"]\n')
    profile = load_profile(str(path))
    assert [c.colour for c in profile.cells] == ["plain", "striped"]
    assert [c.id for c in profile.select(parse_only(["colour=striped"]))] == [
        "lazy/uwsgi/w2/default/cpu/colour-striped/steady"]
    path.write_text('[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\ncolour = ["tartan"]\n')
    with pytest.raises(ConfigError, match="axis colour: expected one of plain, striped"):
        load_profile(str(path))


def test_a_new_axis_reaches_the_command_line_and_the_plans_json(colour_axis):
    args = cli.build_parser().parse_args(["cell", "--strategy", "lazy", "--server", "uwsgi", "--colour", "striped"])
    plan = CellPlan.from_args(args)
    assert plan.colour == "striped" and "--colour" in plan.to_argv()
    data = json.loads(plan.to_json())
    assert data["colour"] == "striped" and CellPlan.from_json(plan.to_json()) == plan
    tartan = cli.build_parser().parse_args(["cell", "--strategy", "lazy", "--server", "uwsgi", "--colour", "tartan"])
    with pytest.raises(ConfigError, match="axis colour: expected one of plain, striped"):
        CellPlan.from_args(tartan)
    serve = cli.build_parser().parse_args(["serve", "--strategy", "lazy", "--server", "uwsgi"])
    assert not hasattr(serve, "colour")  # not a setting of the deployment: `serve` does not take it


def test_a_new_axis_reaches_the_record_its_schema_and_the_report(colour_axis):
    cell = axes.Cell(strategy="lazy", server="uwsgi", colour="striped")
    record = cell_process.failed_cell_record(cell, verdicts.judge_no_record(1), "", 1.0)
    data = record.to_dict()
    assert data["colour"] == "striped" and record.cell_id.endswith("/colour-striped/steady")
    assert CellRecord.from_dict(json.loads(record.to_json())) == record
    assert json_schema()["properties"]["colour"] == {"type": "string"}
    rows = table_rows([record])
    assert rows[0]["colour"] == "striped"
    assert "colour" in render_csv(rows).splitlines()[0].split(",")


def test_a_record_made_before_an_axis_existed_reads_with_its_default(colour_axis):
    record = CellRecord.of(**_minimal_record_fields())
    older = {k: v for k, v in record.to_dict().items() if k != "colour"}
    assert CellRecord.from_dict(older).colour == "plain"


def _minimal_record_fields() -> dict:
    cell = axes.Cell(strategy="lazy", server="uwsgi")
    record = cell_process.failed_cell_record(cell, verdicts.judge_no_record(1), "", 1.0)
    return {**record.cell.to_dict(), **{k: v for k, v in vars(record).items() if k != "cell"}}
