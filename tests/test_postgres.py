"""A real PostgreSQL (no mock): its life, who may connect, the engine reset policies across fork, a
server that is down.

One cluster serves the whole module; the lifecycle tests start their own. Skipped, with the reason,
on a host without PostgreSQL (`.ci/run` installs it).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from forkwise import pg_auth, postgres, servers
from forkwise.config import DB_RESET_POLICIES
from forkwise.deploy import make_deployment
from forkwise.errors import ConfigError, DatabaseUnavailable, PostgresMissing
from forkwise.pg_auth import APP_ROLE, DATABASE, SUPERUSER
from forkwise.postgres import PostgresServer
from forkwise.strategies import registry
from forkwise.webapp.db import Database

AVAILABLE, WHY_NOT = postgres.available()
needs_postgres = pytest.mark.skipif(not AVAILABLE, reason=f"PostgreSQL: {WHY_NOT}")


@pytest.fixture(scope="module")
def server():
    with PostgresServer() as pg:
        yield pg


def running_in(directory: Path) -> list[int]:
    return [p.pid for p in postgres.cluster_processes(directory)]


# --- finding it ----------------------------------------------------------------------------


def test_a_host_without_postgresql_gets_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(postgres, "DEBIAN_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresMissing, match="apt-get install postgresql"):
        PostgresServer()
    available, why = postgres.available()
    assert not available and "PostgreSQL is not installed" in why


@needs_postgres
def test_binaries_are_found_without_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    binaries = postgres.find_binaries()
    assert Path(binaries("initdb")).is_file() and binaries.version


# --- its life ------------------------------------------------------------------------------


@needs_postgres
def test_start_and_stop_leave_nothing_behind():
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "forkwise-pg-*")))
    with PostgresServer() as pg:
        directory, socket = pg.dir, pg.socket_dir / f".s.PGSQL.{pg.port}"
        assert socket.exists() and running_in(directory)
        with pg.admin() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    assert not directory.exists() and not socket.exists()
    assert not running_in(directory) and pg.stop() == []  # a second stop is a no-op
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "forkwise-pg-*"))) == before


@needs_postgres
def test_a_server_that_died_is_still_cleaned_up():
    pg = PostgresServer().start()
    try:
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # pg_ctl stop can no longer stop it cleanly
    finally:
        directory = pg.dir
        pg.stop()
    assert not directory.exists() and not running_in(directory)


@needs_postgres
def test_the_cluster_of_a_killed_owner_is_removed_by_the_next_start(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from forkwise.postgres import PostgresServer\n"
        "print(PostgresServer().start().dir, flush=True)\n"
        "time.sleep(3600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        directory = Path(owner.stdout.readline().strip())
        assert running_in(directory)
    finally:
        owner.kill()  # no chance to stop its cluster
        owner.wait()
    assert directory.exists() and running_in(directory)
    assert directory in postgres.reap_orphans()
    assert not directory.exists() and not running_in(directory)


@needs_postgres
def test_tls_on_loopback_and_the_unix_socket(server):
    for transport, ssl in (("tls", True), ("unix", False)):
        db = Database(server.url(transport))
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("select ssl from pg_stat_ssl where pid = pg_backend_pid()").scalar() is ssl
        db.dispose()


# --- who may connect ------------------------------------------------------------------------

REFUSED = ("no password supplied", "password authentication failed", "pg_hba.conf rejects connection")


def secret_in(passfile: Path) -> str:
    """The password of a passfile's first line (forkwise's secrets hold no colon)."""
    return passfile.read_text().splitlines()[0].rsplit(":", 1)[1]


def psql_as_nobody(server: PostgresServer, home: Path, **env: str) -> subprocess.CompletedProcess:
    """psql to the TCP port as the OS user `nobody`, with no PGPASSWORD and a HOME without .pgpass."""
    conninfo = f"host=127.0.0.1 port={server.port} user={APP_ROLE} dbname={DATABASE} sslmode=require"
    argv = ["runuser", "-u", "nobody", "--", "env", f"HOME={home}",
            *(f"{k}={v}" for k, v in env.items()), server.binaries("psql"), "-w", "-X", "-At", "-d", conninfo,
            "-c", "select current_user"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(argv, capture_output=True, text=True, env=clean, cwd="/", timeout=60, check=False)


def connect(server: PostgresServer, **params):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=server.port, sslmode="require", connect_timeout=10, **params)


def test_pg_hba_lets_in_what_the_transports_need_and_rejects_the_rest():
    tls_only = pg_auth.hba_conf(("tls",)).splitlines()
    assert f"hostssl {DATABASE} {APP_ROLE} 127.0.0.1/32 scram-sha-256" in tls_only
    assert f"local all {SUPERUSER} scram-sha-256" in tls_only  # forkwise's own, over the socket only
    assert not any(APP_ROLE in line and line.startswith("local") for line in tls_only)
    assert tls_only[-2:] == ["host all all all reject", "host replication all all reject"]
    unix_only = pg_auth.hba_conf(("unix",))
    assert f"local {DATABASE} {APP_ROLE} scram-sha-256" in unix_only and "hostssl" not in unix_only
    for text in (pg_auth.hba_conf(pg_auth.TRANSPORTS), unix_only):
        assert "trust" not in text and f"{SUPERUSER} 127" not in text
    with pytest.raises(ConfigError, match="valid: tls, unix"):
        pg_auth.hba_conf(("tcp",))


@needs_postgres
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to act as another user")
def test_another_os_user_on_the_tcp_port_is_refused(server):
    with tempfile.TemporaryDirectory() as home:  # theirs to read, and empty: no .pgpass
        os.chmod(home, 0o755)
        check_another_user_is_refused(server, Path(home))


def check_another_user_is_refused(server: PostgresServer, home: Path) -> None:
    no_secret = psql_as_nobody(server, home)
    assert no_secret.returncode != 0 and "no password supplied" in no_secret.stderr, no_secret.stderr
    # The app's passfile itself is out of that user's reach (0600, in a 0700 directory).
    passfile = psql_as_nobody(server, home, PGPASSFILE=str(server.auth.app_passfile))
    assert passfile.returncode != 0 and "no password supplied" in passfile.stderr, passfile.stderr
    # Control: the same command reaches the server and gets in with the secret, so the refusals above were its own.
    control = psql_as_nobody(server, home, PGPASSWORD=secret_in(server.auth.app_passfile))
    assert control.returncode == 0 and control.stdout.strip() == APP_ROLE, control.stderr


@needs_postgres
def test_a_connection_without_the_secret_is_refused(server, tmp_path, monkeypatch):
    import psycopg

    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    empty = pg_auth.write_private(tmp_path / "empty.pgpass", "")
    for user in (APP_ROLE, SUPERUSER):
        with pytest.raises(psycopg.OperationalError) as refused:
            connect(server, user=user, dbname=DATABASE, passfile=str(empty))
        assert any(why in str(refused.value) for why in REFUSED), refused.value


@needs_postgres
def test_the_superuser_over_tcp_is_refused_even_with_a_secret(server):
    import psycopg

    app_secret, superuser_secret = secret_in(server.auth.app_passfile), secret_in(server.auth.admin_passfile)
    for secret in (app_secret, superuser_secret):
        for dbname in (DATABASE, "postgres"):
            with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
                connect(server, user=SUPERUSER, dbname=dbname, password=secret)
    # The app's role with its own secret gets its own database only.
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        connect(server, user=APP_ROLE, dbname="postgres", password=app_secret)
    with connect(server, user=APP_ROLE, dbname=DATABASE, password=app_secret) as conn:
        assert conn.execute("select current_user").fetchone() == (APP_ROLE,)


@needs_postgres
@pytest.mark.parametrize("transport", ["tls", "unix"])
def test_the_apps_role_owns_its_database_and_is_no_superuser(server, transport):
    from psycopg.errors import InsufficientPrivilege
    from sqlalchemy.exc import ProgrammingError

    db = Database(server.url(transport))
    with db.engine.connect() as conn:
        sql = conn.exec_driver_sql
        assert sql("select rolsuper from pg_roles where rolname = current_user").scalar() is False
        assert sql("select pg_get_userbyid(datdba) from pg_database where datname = current_database()").scalar() \
            == APP_ROLE
        for role in ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program"):
            assert sql(f"select pg_has_role(current_user, '{role}', 'member')").scalar() is False
    with db.engine.connect() as conn, pytest.raises(ProgrammingError) as denied:
        conn.exec_driver_sql("COPY (select 1) TO PROGRAM 'true'")
    assert isinstance(denied.value.orig, InsufficientPrivilege), denied.value
    db.dispose()


@needs_postgres
@pytest.mark.parametrize("server_name", ["gunicorn-sync", "uwsgi"])
def test_the_apps_url_argv_and_environment_hold_no_secret(server, tmp_path, server_name):
    secrets = {secret_in(server.auth.app_passfile), secret_in(server.auth.admin_passfile)}
    for path in (server.auth.app_passfile, server.auth.admin_passfile):  # ours, and only ours
        assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_uid == os.geteuid()
    deployment = make_deployment(strategy="control", server=server_name, workers=2, spec_path=tmp_path / "spec.json",
                                 run_dir=tmp_path / "run", port=8000, database_url=server.url("tls"))
    plan = servers.get(server_name).plan(deployment, registry.get("control").needs)
    shown = [server.url("tls"), server.url("unix"), *plan.argv, *plan.env.values(), *plan.files.values(),
             *deployment.settings.to_environ().values()]
    assert not [text for text in shown for secret in secrets if secret in text]
    assert "passfile=" in deployment.settings.database_url


@needs_postgres
def test_a_server_for_tls_only_refuses_the_app_on_its_socket():
    import psycopg

    with PostgresServer(transports=("tls",)) as pg:
        with pytest.raises(ConfigError, match="not open"):
            pg.url("unix")
        with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
            psycopg.connect(host=str(pg.socket_dir), port=pg.port, user=APP_ROLE, dbname=DATABASE,
                            passfile=str(pg.auth.app_passfile), connect_timeout=10)
        db = Database(pg.url("tls"))
        assert db.engine.connect().close() is None
        db.dispose()


# --- reset policies across fork --------------------------------------------------------------


def in_child(work) -> str:
    """Run `work()` in a forked child; its return value (a string) or its error, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            result = str(work())
        except BaseException as exc:  # reported to the parent, which fails the test
            result = f"error: {type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
    return text


def backend_pid(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.exec_driver_sql("select pg_backend_pid()").scalar()


@needs_postgres
@pytest.mark.parametrize("reset", DB_RESET_POLICIES)
def test_only_the_none_policy_hands_the_masters_session_to_a_worker(server, reset):
    """The master queried before fork; a worker's first query runs in the master's own server
    session (the same backend pid) under `none`, in a session of its own under every reset."""
    db = Database(server.url("unix"), reset=reset)
    db.create_schema()
    master = backend_pid(db)
    worker = in_child(lambda: backend_pid(db))
    assert not worker.startswith("error"), worker
    assert (int(worker) == master) is (reset == "none")
    db.dispose()


@needs_postgres
@pytest.mark.parametrize("reset", ["none", "dispose"])
def test_two_workers_on_the_inherited_tls_session_break_it(reset):
    """Over TLS, two processes that use one inherited session in turn desynchronise its record
    sequence: the server logs the failed record check (pre-ping may hide it from the app). A
    reset policy gives each its own session, and the server sees nothing wrong."""
    with PostgresServer() as pg:
        db = Database(pg.url("tls"), reset=reset)
        db.create_schema()
        db.touch()
        digest = hashlib.sha256(b"x").hexdigest()
        answers = [in_child(lambda: db.record([digest], [[1.0]], os.getpid(), "test")) for _ in range(2)]
        server_saw = "\n".join(pg.log_highlights())
        if reset == "none":
            assert "SSL error" in server_saw or any(a.startswith("error") for a in answers), (answers, server_saw)
        else:
            failed = any(a.startswith("error") for a in answers)
            assert "SSL error" not in server_saw and not failed, (answers, server_saw)
        db.dispose()


# --- a server that is down -------------------------------------------------------------------


@needs_postgres
@pytest.mark.parametrize("transport", ["tls", "unix"])
def test_a_database_that_is_down_is_unavailable_then_back(server, transport):
    db = Database(server.url(transport), busy_timeout_s=2.0)
    db.create_schema()
    before = db.count()
    digest = hashlib.sha256(b"y").hexdigest()
    with server.down(), pytest.raises(DatabaseUnavailable, match="unavailable"):
        db.record([digest], [[2.0]], os.getpid(), "test")
    # The pooled connection died with the server: pre-ping replaces it, no error reaches the caller.
    assert db.record([digest], [[2.0]], os.getpid(), "test")[0][1] == digest
    assert db.count() == before + 1
    db.dispose()


@needs_postgres
def test_the_app_answers_503_with_retry_after_while_the_database_is_down(server, tiny_spec_path, tmp_path):
    from forkwise.config import AppSettings
    from forkwise.model.spec import ModelSpec
    from forkwise.webapp import create_app

    settings = AppSettings(strategy="control", model_spec=tiny_spec_path, database_url=server.url("tls"),
                           run_dir=tmp_path)
    client = create_app(settings).test_client()
    width = ModelSpec.load(tiny_spec_path).input_shape[0]
    body = {"instances": [[0.5] * width]}
    ok = client.post("/predict", json=body)
    assert ok.status_code == 200 and len(ok.json["digests"]) == 1
    with server.down():
        down = client.post("/predict", json=body)
    assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    assert down.json["error"]["code"] == "database_unavailable"
    assert client.post("/predict", json=body).status_code == 200  # reconnected by itself


@pytest.mark.parametrize("line, telling", [
    ("2026-11-27 07:43:53.472 UTC [2794] ERROR:  duplicate key value violates unique constraint", True),
    ("2026-11-27 07:43:53.472 UTC [2794] FATAL:  the database system is shutting down", True),
    ("2026-11-27 07:43:53.472 UTC [2794] WARNING:  there is no transaction in progress", True),
    ("2026-11-27 07:43:53.472 UTC [2794] LOG:  could not receive data from client: Connection reset", True),
    ("2026-11-27 07:43:53.472 UTC [2794] LOG:  database system is ready to accept connections", False),
    ("2026-11-27 07:43:53.472 UTC [2794] LOG:  checkpoint starting: time", False),
])
def test_the_server_log_lines_that_tell_of_broken_sessions(line, telling):
    assert bool(postgres.TELLING_LINE.search(line)) is telling
