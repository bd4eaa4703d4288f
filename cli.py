"""forkwise: which way of loading a model into a pre-fork server (Gunicorn, uWSGI) hangs, crashes,
answers wrong or loses rows, and which of the correct ones serves fastest within your budgets."""

# Errors raised inside are caught once, in main(): one line, `error: ...`, exit status 2
# (the exit statuses: cli_help.EXIT_CODES).

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from forkwise import __version__, cli_help, gpu, servers
from forkwise.checks import FLOAT, INT, above, argparse_type
from forkwise.config import DEFAULT_DATABASE, default_home, resolve_threads
from forkwise.errors import ConfigError, ForkwiseError
from forkwise.matrix.records.axes import axes, axis
from forkwise.matrix.run.plan import DEPLOYMENT_SETTINGS, CellPlan, add_plan_args, cell_from_args, cli_fields
from forkwise.strategies import registry


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    """The recommendation's budgets (forkwise.matrix.analysis.recommend), over the profile's [recommend]."""
    p.add_argument("--p99-ms", type=argparse_type(FLOAT, above(0)), default=None,
                   help="recommend within this p99 latency "
                        "(default: the profile's [recommend] p99_ms; RESULTS.md states it)")
    p.add_argument("--memory-mb", type=argparse_type(FLOAT, above(0)), default=None,
                   help="recommend within this total PSS of the deployment "
                        "(default: the profile's [recommend] memory_mb)")


def _host_label(text: str) -> str:
    label = text.strip()
    if not label or len(label) > 64 or not label.isprintable():
        raise argparse.ArgumentTypeError(f"expected a printable name of 1 to 64 characters, got {text!r}")
    return label


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkwise", description=__doc__)
    parser.add_argument("--version", action="version", version=f"forkwise {__version__}")
    parser.add_argument("--home", type=Path, default=None,
                        help="where built models and references live (default: $FORKWISE_HOME, else ~/.cache/forkwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("model", help="build a model and its reference set (cell, serve and matrix do it on first use)")
    p.add_argument("action", choices=["build"], help="build: make the model and its reference set unless they exist")
    p.add_argument("--model", default="default", help=axis("model").help)
    p.add_argument("--rebuild", action="store_true", help="build them again even if they exist")
    p.add_argument("--backend", choices=gpu.BACKENDS, default=gpu.DEFAULT_BACKEND,
                   help="the Keras backend that computes the reference set (on CPU)")

    sub.add_parser("strategies", help="list the registered strategies and server settings")
    sub.add_parser("schema", help="print the JSON schema of a cell record")

    p = sub.add_parser("cell", help="start one strategy under one server, verify it, stop it, print one JSON record")
    add_plan_args(p, required=False)  # --strategy and --server: required unless --plan gives them
    p.add_argument("--plan", type=Path, default=None, metavar="FILE.json",
                   help="the whole plan as JSON (CellPlan.to_json, as `forkwise matrix` writes it); no other plan flag")
    p.add_argument("--record-out", type=Path, default=None, metavar="PATH",
                   help="also write the JSON record to this file (how `forkwise matrix` reads it back)")
    p.add_argument("--keep", type=Path, default=None, help="keep the run directory (logs, database) here")
    p.add_argument("--check", action="store_true", help="exit 1 unless the verdict is OK")

    p = sub.add_parser("serve", help="run one deployment in the foreground until Ctrl-C or SIGTERM")
    add_plan_args(p, only=DEPLOYMENT_SETTINGS)  # the deployment's settings, declared once in the plan
    p.add_argument("--port", type=argparse_type(INT, above(0)), default=8000, help="the port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (loopback: this machine only)")
    p.add_argument("--database-url", default=None, help="any SQLAlchemy URL (default: a SQLite file in --run-dir)")
    p.add_argument("--run-dir", type=Path, default=None, help="private directory for the database, locks and sockets")

    _add_run_commands(sub)
    cli_help.finish(parser, sub)
    return parser


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """matrix, merge, report, evidence and compare: the commands that make and read runs."""
    p = sub.add_parser("matrix", help="run a matrix profile and publish its results")
    p.add_argument("--profile", default="default", metavar="NAME|PATH.toml",
                   help="a profile listed below, or the path of your own .toml")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2",
                   help="restrict an axis, e.g. strategy=lazy,server=uwsgi")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: results/<profile>)")
    p.add_argument("--resume", action="store_true",
                   help="keep the records already in --out and run only the missing cells")
    p.add_argument("--plain", action="store_true", help="plain progress lines (no live display), for CI logs")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="run shard K of N: the profile's cells split by expected duration, the same on every host")
    p.add_argument("--host-label", type=_host_label, default=None, metavar="NAME",
                   help="name this host in the records (FORKWISE_HOST_LABEL; default: the hostname)")
    _add_budget_args(p)

    p = sub.add_parser("merge", help="merge run folders (shards, hosts) into one report, one section per host")
    p.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="folders `forkwise matrix --out` wrote")
    p.add_argument("--out", type=Path, required=True, help="a new folder for the merged report")
    p.add_argument("--allow-missing", action="store_true",
                   help="publish even when a shard is missing; the report and stderr name what is missing")

    p = sub.add_parser("report", help="render RESULTS.md, CSV, JSON and HTML from a run's records")
    p.add_argument("dir", type=Path, help="a run folder: its records.jsonl (and run.json)")
    _add_budget_args(p)

    p = sub.add_parser("evidence", help="take a run's goal evidence (micro-benchmarks, profiles of missed goals' "
                                        "cells) into its folder, then render its report again")
    p.add_argument("dir", type=Path, help="a run folder made on this machine: its records.jsonl and run.json")

    p = sub.add_parser("compare", help="compare two runs; differences within the noise are marked n.s.")
    p.add_argument("a", type=Path, help="the earlier run's folder (records.jsonl or results.json)")
    p.add_argument("b", type=Path, help="the later run's folder, judged against a")
    p.add_argument("--max-regression", type=float, default=None, metavar="PCT",
                   help="exit 1 when a measure of run b (throughput, p99, memory, cold start; a cell, a strategy "
                        "or the whole run) is worse beyond the noise by more than PCT percent, or a cell OK in "
                        "run a fails in run b (default: report only)")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison to this file (COMPARE.md)")


def _spec(home: Path, model: str, backend: str = gpu.DEFAULT_BACKEND) -> Path:
    from forkwise.model.spec import ensure_spec

    return ensure_spec(home, model, backend=backend)


def cmd_model(args: argparse.Namespace, home: Path) -> int:
    from forkwise.model.spec import ModelSpec, ensure_spec

    spec = ModelSpec.load(ensure_spec(home, args.model, rebuild=args.rebuild, backend=args.backend))
    print(json.dumps({"model": str(spec.model_path), "reference": str(spec.reference_path),
                      "input_shape": spec.input_shape, "output_shape": spec.output_shape, "sha256": spec.sha256}))
    return 0


def cmd_strategies(args: argparse.Namespace, home: Path) -> int:
    for name in registry.names():
        cls = registry.get(name)
        print(f"{name:<24} preload={str(cls.needs.preload_app).lower():<5}  {cls.summary}")
    print()
    for name in servers.names():
        print(f"{name:<24} {servers.get(name).summary}")
    return 0


def cmd_schema(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.records.record_schema import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_cell(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.run.cell_process import run_cell_child
    from forkwise.matrix.run.summary import summary_line

    record = run_cell_child(_cell_plan(args, home), home, keep=args.keep, record_out=args.record_out)
    print(record.to_json(), flush=True)
    print(summary_line(record), file=sys.stderr)
    return 1 if args.check and not record.verdict.ok else 0


def _cell_plan(args: argparse.Namespace, home: Path) -> CellPlan:
    """The cell's plan: from --plan FILE.json, or from the flags."""
    if args.plan is None:
        missing = [a.flag for a in axes() if a.required and getattr(args, a.name) is None]
        if missing:
            raise ConfigError(f"cell: {' and '.join(missing)} are required (or --plan FILE.json)")
        return CellPlan.from_args(args)
    given = [a.flag for a in axes() if getattr(args, a.name) != (None if a.required else a.default)]
    given += [f.metadata["setting"].flag for f in cli_fields()
              if getattr(args, f.name) != (None if f.default is dataclasses.MISSING else f.default)]
    if given:
        raise ConfigError(f"cell: --plan gives the whole plan; also given: {', '.join(given)}")
    from forkwise.matrix.run.child import read_plan

    return CellPlan.from_json(read_plan(args.plan), where=f"plan {args.plan}")


def cmd_serve(args: argparse.Namespace, home: Path) -> int:
    from forkwise.deploy import check_host, database_for

    cell_from_args(args, "serve", deployment_only=True)  # every axis checked as declared, before anything starts
    check_host(args.device, args.backend, args.gpu_policy, args.database)
    if args.database_url and args.database != DEFAULT_DATABASE:
        raise ConfigError(f"--database-url names your own database; --database {args.database} starts one: give one")
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="forkwise-serve-"))
    spec_path = _spec(home, args.model, args.backend)
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["signal"] = signum

    # Set before the database starts: a SIGTERM from here on ends the loop below, and every
    # `finally` stops what it started (the server, then the database).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with database_for(args.database, run_dir) as database:
        return _serve(args, run_dir, spec_path, args.database_url or database.url, stop)


def _serve(args: argparse.Namespace, run_dir: Path, spec_path: Path, database_url: str,
           stop: dict[str, int | None]) -> int:
    from forkwise.deploy import launch, make_deployment

    deployment = make_deployment(
        strategy=args.strategy, server=args.server, workers=args.workers,
        spec_path=spec_path, run_dir=run_dir, port=args.port,
        database_url=database_url, backend=args.backend, device=args.device, gpu_policy=args.gpu_policy,
        host=args.host, db_reset=args.db_reset, db_in_master=args.db_in_master, in_flight=args.in_flight,
        overrides={"intra_op_threads": resolve_threads(args.runtime_threads, args.workers, os.cpu_count() or 1)},
    )
    if stop["signal"] is not None:
        return 0
    running = launch(deployment, log_to_file=False)
    print(f"forkwise: {args.strategy} under {args.server} on http://{args.host}:{args.port} "
          f"(run dir {run_dir}, database {'--database-url' if args.database_url else args.database}); "
          f"Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        while stop["signal"] is None and running.group.alive():
            time.sleep(0.2)
    finally:
        running.group.stop()
    if stop["signal"] is None:
        print(f"error: the server exited with code {running.group.returncode}", file=sys.stderr)
        return 1
    return 0


def cmd_matrix(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.commands import run_matrix
    from forkwise.matrix.records.hosts import WHOLE, parse_shard
    from forkwise.matrix.run.environment import HOST_LABEL_VAR

    shard = parse_shard(args.shard) if args.shard is not None else WHOLE
    if args.host_label is not None:
        os.environ[HOST_LABEL_VAR] = args.host_label  # every cell process inherits it
    return run_matrix(profile=args.profile, only=args.only, out=args.out, resume=args.resume,
                      plain=args.plain, home=home, p99_ms=args.p99_ms, memory_mb=args.memory_mb, shard=shard)


def cmd_merge(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.commands import merge

    merged, paths = merge(args.dirs, args.out, allow_missing=args.allow_missing)
    for line in merged.lines:
        print(f"forkwise: MISSING {line}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


def cmd_report(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.publish.folder import report_dir

    for path in report_dir(args.dir, p99_ms=args.p99_ms, memory_mb=args.memory_mb):
        print(path)
    return 0


def cmd_evidence(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.commands import add_goal_evidence

    for path in add_goal_evidence(args.dir, home):
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace, home: Path) -> int:
    from forkwise.matrix.analysis.compare import compare
    from forkwise.matrix.analysis.compare_runs import load_run
    from forkwise.matrix.analysis.finalists import answers_agree
    from forkwise.matrix.publish.compare_report import regressions, render_comparison
    from forkwise.matrix.publish.finalists_report import load_finalists
    from forkwise.matrix.records.budgets import Budgets
    from forkwise.matrix.records.run_info import FINALISTS_FILE, RunInfo

    if args.max_regression is not None and args.max_regression < 0:
        raise ConfigError(f"--max-regression must be a percentage >= 0; got {args.max_regression}")
    # Both runs' recommendations within the later run's budgets (its run.json; the defaults without one).
    budgets = Budgets.from_dict(dict(RunInfo.read(args.b).recommend or {}))
    result = compare(load_run(args.a), load_run(args.b), budgets)
    if args.a.is_dir() and args.b.is_dir():  # a run's folder keeps its finalists' rounds
        result = dataclasses.replace(result, finalists=answers_agree(load_finalists(args.a / FINALISTS_FILE),
                                                                  load_finalists(args.b / FINALISTS_FILE)))
    text = render_comparison(result)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    if args.max_regression is None:
        return 0
    found = regressions(result, args.max_regression)
    for line in found:
        print(f"regression: {line}", file=sys.stderr)
    return 1 if found else 0


COMMANDS = {"model": cmd_model, "strategies": cmd_strategies, "schema": cmd_schema, "cell": cmd_cell,
            "serve": cmd_serve,
            "matrix": cmd_matrix, "merge": cmd_merge, "report": cmd_report, "evidence": cmd_evidence,
            "compare": cmd_compare}


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes it started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = args.home or default_home()
    if args.command != "serve":  # serve handles SIGTERM itself, as its normal way to stop
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return COMMANDS[args.command](args, home)
    except ForkwiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
