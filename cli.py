"""The `forkwise` command. Errors raised inside are caught here, once: `error: ...`, exit 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from forkwise import __version__, gpu, servers
from forkwise.config import default_home
from forkwise.errors import ForkwiseError
from forkwise.strategies import registry


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be at least 1")
    return levels


def _positive(kind, allow_zero: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if allow_zero else 'above 0'}, got {text}")
        return value

    return parse


def _add_deployment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", required=True, help=f"one of: {', '.join(registry.names())}")
    p.add_argument("--server", required=True, help=f"one of: {', '.join(servers.names())}")
    p.add_argument("--workers", type=_positive(int), default=2)
    p.add_argument("--model", default="default",
                   help="a built-in model (default, large, tiny) or the path of your own .keras file")
    p.add_argument("--device", choices=gpu.DEVICES, default="cpu",
                   help="cpu hides every GPU from the deployment; gpu needs an NVIDIA GPU")
    p.add_argument("--backend", choices=gpu.BACKENDS, default=gpu.DEFAULT_BACKEND,
                   help="the Keras backend serving the model (jax and torch: pip install 'forkwise[jax]' / '[torch]')")
    p.add_argument("--gpu-policy", choices=gpu.GPU_POLICIES, default=gpu.DEFAULT_GPU_POLICY,
                   help="GPU memory policy (device gpu): grow, fraction (jax), off (the frameworks' defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkwise", description=__doc__)
    parser.add_argument("--version", action="version", version=f"forkwise {__version__}")
    parser.add_argument("--home", type=Path, default=None, help="where models and references live (FORKWISE_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("model", help="build the default model and its reference set")
    p.add_argument("action", choices=["build"])
    p.add_argument("--model", default="default", help="built-in name or a .keras path")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--backend", choices=gpu.BACKENDS, default=gpu.DEFAULT_BACKEND,
                   help="the Keras backend that computes the reference set (on CPU)")

    sub.add_parser("strategies", help="list the registered strategies and server settings")
    sub.add_parser("schema", help="print the JSON schema of a cell record")

    p = sub.add_parser("cell", help="start one strategy under one server, verify it, stop it, print one JSON record")
    _add_deployment_args(p)
    p.add_argument("--load", type=_levels, default=(), metavar="C1,C2", help="concurrency levels to load-test (default: none)")
    p.add_argument("--duration", type=_positive(float), default=4.0, help="seconds measured per load level")
    p.add_argument("--warmup", type=_positive(float, allow_zero=True), default=1.0,
                   help="seconds of load at the highest level before the first measured one (0: none)")
    p.add_argument("--intervals", type=_positive(int), default=4, help="throughput samples per level")
    p.add_argument("--driver", choices=["auto", "wrk", "builtin"], default="auto")
    p.add_argument("--request-timeout", type=_positive(float), default=10.0)
    p.add_argument("--boot-timeout", type=_positive(float), default=90.0)
    p.add_argument("--max-batch", type=_positive(int), default=None, help="model-server batching: rows per batch")
    p.add_argument("--max-wait-ms", type=_positive(float), default=None, help="model-server batching: wait to fill a batch")
    p.add_argument("--scenario", default="steady", help="a reliability scenario: steady, kill-worker, "
                   "kill-model-server, reload, recycle, db-contention, bad-input")
    p.add_argument("--scenario-duration", type=_positive(float), default=9.0, help="seconds of load around the event")
    p.add_argument("--profile-dir", type=Path, default=None,
                   help="py-spy the workers and model server at the highest load level; profiles go here")
    p.add_argument("--keep", type=Path, default=None, help="keep the run directory (logs, database) here")
    p.add_argument("--check", action="store_true", help="exit 1 unless the verdict is OK")
    p.add_argument("--probe-reference-ms", type=_positive(float), default=None,
                   help="the CPU probe's reference from `forkwise matrix` (default: calibrated here, 1 s)")
    p.add_argument("--quiet-budget", type=_positive(float, allow_zero=True), default=10.0,
                   help="seconds, in all, to wait for a quiet host before load levels")

    p = sub.add_parser("serve", help="run one deployment in the foreground until Ctrl-C or SIGTERM")
    _add_deployment_args(p)
    p.add_argument("--port", type=_positive(int), default=8000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--database-url", default=None, help="any SQLAlchemy URL (default: a SQLite file in --run-dir)")
    p.add_argument("--run-dir", type=Path, default=None, help="private directory for the database, locks and sockets")

    p = sub.add_parser("matrix", help="run a matrix profile and publish its results")
    p.add_argument("--profile", default="default")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2", help="restrict an axis, e.g. strategy=lazy,server=uwsgi")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: results/<profile>)")
    p.add_argument("--resume", action="store_true", help="keep the records already in --out and run only the missing cells")
    p.add_argument("--plain", action="store_true", help="plain progress lines (no live display), for CI logs")

    p = sub.add_parser("report", help="render RESULTS.md, CSV, JSON and HTML from a run's records")
    p.add_argument("dir", type=Path)

    p = sub.add_parser("compare", help="compare two runs; differences within the noise are marked n.s.")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    return parser


def _spec(home: Path, model: str, backend: str = gpu.DEFAULT_BACKEND) -> Path:
    from forkwise.model.spec import ensure_spec

    return ensure_spec(home, model, backend=backend)


def _check_device(args) -> None:
    """Fail fast, before any model is built: a GPU for device gpu, a valid policy for it."""
    if args.device == "gpu":
        gpu.policy_env(args.backend, args.gpu_policy, 1)  # ConfigError for a policy the backend lacks
        gpu.require_gpu()


def cmd_model(args, home: Path) -> int:
    from forkwise.model.spec import ModelSpec, ensure_spec

    spec = ModelSpec.load(ensure_spec(home, args.model, rebuild=args.rebuild, backend=args.backend))
    print(json.dumps({"model": str(spec.model_path), "reference": str(spec.reference_path),
                      "input_shape": spec.input_shape, "output_shape": spec.output_shape, "sha256": spec.sha256}))
    return 0


def cmd_strategies(args, home: Path) -> int:
    for name in registry.names():
        cls = registry.get(name)
        print(f"{name:<24} preload={str(cls.needs.preload_app).lower():<5}  {cls.summary}")
    print()
    for name, adapter in servers.ADAPTERS.items():
        print(f"{name:<24} {adapter.summary}")
    return 0


def cmd_schema(args, home: Path) -> int:
    from forkwise.matrix.records import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_cell(args, home: Path) -> int:
    from forkwise.matrix.cell import CellSpec, run_cell, summary_line

    from forkwise.matrix import scenarios

    scenarios.get(args.scenario, registry.get(args.strategy))  # fail fast on a bad name
    servers.get(args.server)
    _check_device(args)
    overrides = {k: v for k, v in (("max_batch", args.max_batch), ("max_wait_ms", args.max_wait_ms)) if v is not None}
    cell = CellSpec(
        strategy=args.strategy, server=args.server, workers=args.workers,
        model=Path(args.model).stem if args.model.endswith(".keras") else args.model,
        spec_path=_spec(home, args.model, args.backend), load_levels=args.load, duration_s=args.duration,
        warmup_s=args.warmup, intervals=args.intervals, driver=args.driver,
        request_timeout_s=args.request_timeout, boot_timeout_s=args.boot_timeout, overrides=overrides,
        scenario=args.scenario, scenario_duration_s=args.scenario_duration, profile_dir=args.profile_dir,
        device=args.device, backend=args.backend, gpu_policy=args.gpu_policy,
        probe_reference_ms=args.probe_reference_ms or 0.0, quiet_budget_s=args.quiet_budget,
    )
    if args.profile_dir:
        from forkwise.matrix.profiling import require_py_spy

        require_py_spy()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    record = run_cell(cell, workdir=args.keep)
    print(record.to_json(), flush=True)
    print(summary_line(record), file=sys.stderr)
    return 1 if args.check and not record.verdict.ok else 0


def cmd_serve(args, home: Path) -> int:
    from forkwise.deploy import launch, make_deployment

    _check_device(args)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="forkwise-serve-"))
    deployment = make_deployment(
        strategy=args.strategy, server=args.server, workers=args.workers,
        spec_path=_spec(home, args.model, args.backend), run_dir=run_dir, port=args.port,
        database_url=args.database_url, backend=args.backend, device=args.device, gpu_policy=args.gpu_policy,
        host=args.host,
    )
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running = launch(deployment, log_to_file=False)
    print(f"forkwise: {args.strategy} under {args.server} on http://{args.host}:{args.port} "
          f"(run dir {run_dir}); Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        while stop["signal"] is None and running.group.alive():
            time.sleep(0.2)
    finally:
        running.group.stop()
    if stop["signal"] is None:
        print(f"error: the server exited with code {running.group.proc.returncode}", file=sys.stderr)
        return 1
    return 0


def cmd_matrix(args, home: Path) -> int:
    from forkwise.matrix.runner import run_matrix

    return run_matrix(profile=args.profile, only=args.only, out=args.out, resume=args.resume,
                      plain=args.plain, home=home)


def cmd_report(args, home: Path) -> int:
    from forkwise.matrix.runner import report_dir

    for path in report_dir(args.dir):
        print(path)
    return 0


def cmd_compare(args, home: Path) -> int:
    from forkwise.matrix.compare import compare, judgement_for, load_run, render_comparison

    run_a, run_b = load_run(args.a), load_run(args.b)
    judgement = judgement_for(run_a, run_b)
    print(render_comparison(compare(run_a, run_b, judgement), judgement))
    return 0


COMMANDS = {"model": cmd_model, "strategies": cmd_strategies, "schema": cmd_schema, "cell": cmd_cell, "serve": cmd_serve,
            "matrix": cmd_matrix, "report": cmd_report, "compare": cmd_compare}


def _terminate_as_interrupt(signum, frame):
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
