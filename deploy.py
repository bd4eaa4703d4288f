"""Start one deployment (strategy x server) in its own process group: used by `cell` and `serve`.

Runs in the launcher's process (``forkwise cell``/``serve``). The server's environment is
built here, once: the settings (``FORKWISE_*``), the server adapter's variables, and the
device, Keras backend and GPU memory policy (``forkwise.gpu``), which every process of the
deployment then inherits before it imports the ML runtime. The deployment's database is
started here too (``database_for``): a SQLite file, or a PostgreSQL server of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from forkwise import gpu, servers
from forkwise.config import DATABASE_TRANSPORTS, DATABASES, DEFAULT_DATABASE, DEFAULT_DB_RESET, AppSettings
from forkwise.errors import UnknownNameError
from forkwise.model.spec import ModelSpec
from forkwise.pg_watch import ConnectionPeak
from forkwise.postgres import PostgresServer
from forkwise.procs import ProcessGroup, private_dir
from forkwise.servers.base import Deployment, ServerTimeouts
from forkwise.strategies import registry
from forkwise.webapp.db import Database

# Every process of a deployment inherits this tag, so leftovers can be found by it.
RUN_TAG_VAR = "FORKWISE_RUN_TAG"


def check_host(device: str, backend: str, gpu_policy: str, database: str) -> None:
    """Fail fast, before any model is built: a GPU (and a memory policy its backend has) for device
    gpu, PostgreSQL installed for a database other than the default."""
    if device == "gpu":
        gpu.policy_env(backend, gpu_policy, 1)  # ConfigError for a policy the backend lacks
        gpu.require_gpu()
    if database != DEFAULT_DATABASE:
        PostgresServer.check_installed()


def sqlite_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / 'forkwise.db'}"


@dataclass(frozen=True)
class DatabaseRun:
    """The database of one deployment, for as long as it runs: its kind, the app's URL (which names
    the app's passfile, never its secret), and the server forkwise started for it (None for SQLite)."""

    kind: str
    url: str
    server: PostgresServer | None = None

    @property
    def version(self) -> str:
        """What served the database: "SQLite 3.40.1", "PostgreSQL 15.18 (...)"."""
        if self.server is None:
            import sqlite3

            return f"SQLite {sqlite3.sqlite_version}"
        return self.server.version

    def connection_watch(self) -> ConnectionPeak | _NoWatch:
        """Samples the app's connections to the server while in use, and reads the server's log on
        leaving (`peak`, `log_highlights`; None and () for SQLite)."""
        return ConnectionPeak(self.server) if self.server else _NoWatch()


class _NoWatch(contextlib.nullcontext):
    peak = None
    log_highlights: tuple[str, ...] = ()

    def __enter__(self) -> _NoWatch:
        return self  # nullcontext would hand back None, which has no `peak`


@contextlib.contextmanager
def database_for(kind: str, run_dir: Path) -> Iterator[DatabaseRun]:
    """Start the database a deployment of `kind` writes to; stop and remove it on leaving."""
    if kind not in DATABASES:
        raise UnknownNameError("database", kind, DATABASES)
    if kind == DEFAULT_DATABASE:
        yield DatabaseRun(kind, sqlite_url(run_dir))
        return
    transport = DATABASE_TRANSPORTS[kind]
    assert transport is not None  # only SQLite, handled above, has none
    # pg_hba.conf lets the app in by this transport only.
    with PostgresServer(transports=(transport,)) as server:
        yield DatabaseRun(kind, server.url(transport), server)


@dataclass(frozen=True)
class Launch:
    deployment: Deployment
    spec: ModelSpec
    group: ProcessGroup
    tag: str


def make_deployment(
    *,
    strategy: str,
    server: str,
    workers: int,
    spec_path: Path,
    in_flight: int = 0,
    run_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    database_url: str | None = None,
    timeouts: ServerTimeouts = ServerTimeouts(),
    max_requests: int = 0,
    overrides: dict | None = None,
    backend: str = gpu.DEFAULT_BACKEND,
    device: str = gpu.DEFAULT_DEVICE,
    gpu_policy: str = gpu.DEFAULT_GPU_POLICY,
    db_reset: str = DEFAULT_DB_RESET,
    db_in_master: bool = False,
) -> Deployment:
    """Validate names and settings; the errors list valid names and say what to fix."""
    strategy_cls = registry.get(strategy)
    adapter = servers.get(server)
    run_dir = private_dir(run_dir)
    settings = AppSettings(
        strategy=strategy,
        model_spec=spec_path,
        database_url=database_url or sqlite_url(run_dir),
        run_dir=run_dir,
        preload_app=strategy_cls.needs.preload_app,
        backend=backend,
        device=device,
        gpu_policy=gpu_policy,
        db_reset=db_reset,
        db_in_master=db_in_master,
        **(overrides or {}),
    )
    return Deployment(
        settings=settings, server=server, workers=workers, threads=adapter.in_flight(in_flight),
        host=host, port=port, timeouts=timeouts, max_requests=max_requests,
    )


def gpu_processes(deployment: Deployment) -> int:
    """How many processes of a deployment may hold a GPU context, at most: every worker, plus
    the master (a preloading strategy) or the model server (a child-process one). Counted from
    the deployment alone: no strategy is named here."""
    return deployment.workers + 1


def device_env(deployment: Deployment) -> dict[str, str | None]:
    """Device, backend and memory-policy variables for this deployment (None: remove)."""
    s = deployment.settings
    return gpu.deployment_env(s.backend, s.device, s.gpu_policy, gpu_processes(deployment))


def launch(deployment: Deployment, log_to_file: bool = True) -> Launch:
    """Create the schema, write the server's config, start it in a new process group.

    The caller owns the returned group and must stop it (``group.stop()``).
    """
    settings = deployment.settings
    strategy_cls = registry.get(settings.strategy)
    plan = servers.get(deployment.server).plan(deployment, strategy_cls.needs)
    plan.write_files()
    # Schema first, from here: the workers then only find it (a worker that builds the app re-checks, under a lock).
    schema = Database(settings.database_url, settings.db_busy_timeout_s, lock_dir=settings.run_dir)
    schema.create_schema()
    schema.dispose()  # the launcher keeps no connection: the deployment's own are the ones counted
    tag = secrets.token_hex(8)
    env = {**os.environ, **settings.to_environ(), **plan.env, RUN_TAG_VAR: tag, "PYTHONUNBUFFERED": "1"}
    for name, value in device_env(deployment).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_path = settings.run_dir / "server.log" if log_to_file else None
    group = ProcessGroup(plan.argv, env, log_path, cwd=settings.run_dir).start()
    return Launch(deployment, ModelSpec.load(settings.model_spec), group, tag)
