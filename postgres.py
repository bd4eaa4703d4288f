"""A PostgreSQL server of forkwise's own: one cluster per deployment, made, started, stopped and removed.

Used by ``forkwise cell`` and ``forkwise serve`` (``deploy.database_for``) and by the tests. The
cluster lives in a fresh private (0700) temporary directory: ``initdb`` there, ``pg_ctl start``
listening on a Unix socket in that directory and on a loopback port with TLS on (a self-signed
certificate made at start with ``openssl``: the TLS variant is the one teams run). Every connection
authenticates with a per-cluster secret, and the app's role is not a superuser (forkwise.pg_auth).
``stop()`` runs whatever happened before it: ``pg_ctl stop``, then any process of the cluster still
alive is killed, then the directory is removed.

PostgreSQL comes from the system packages; its binaries are found under
``/usr/lib/postgresql/<version>/bin`` (Debian's layout) or on PATH. ``initdb`` and ``pg_ctl``
refuse to run as root: as root, they run as the ``postgres`` user (``runuser``), which then owns
the directory.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from forkwise import pg_auth
from forkwise.errors import ConfigError, DatabaseServerError, PostgresMissing
from forkwise.logs import distinct_lines
from forkwise.pg_auth import APP_ROLE, DATABASE, SUPERUSER, ClusterAuth
from forkwise.procs import free_port, interrupts_held

log = logging.getLogger("forkwise.postgres")

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ROOT_RUNS_AS = "postgres"  # the unprivileged user initdb and pg_ctl run as when forkwise runs as root
ADMIN_DATABASE = "postgres"  # where forkwise's own observing connections go, so they are never counted
APP_NAME = "forkwise-app"  # application_name of the app's connections: pg_stat_activity counts these
DIR_PREFIX = "forkwise-pg-"  # each cluster's temporary directory: <tmp>/forkwise-pg-XXXX
# In that directory: the pid and start time of the process that owns the cluster. A cluster whose
# owner is gone (killed before it could stop it) is an orphan, removed by the next start.
OWNER_FILE = "owner"
# pg_ctl's own default wait for a start or stop, in seconds: a backstop, not a measurement.
PG_CTL_WAIT_S = 60
LOG_TAIL_BYTES = 4000
LOG_READ_BYTES = 4 << 20  # the most of the server's log read for its telling lines
HIGHLIGHTS_KEPT = 8
# What the server says about broken sessions, whether or not a client saw an error: a TLS record
# that failed its check, a protocol message out of place, a session cut, a refusal. A pooled
# connection shared by two processes leaves such lines even when pre-ping hid it from the app.
TELLING_LINE = re.compile(r"\b(?:ERROR|FATAL|PANIC|WARNING):|SSL error|could not receive data|unexpected EOF"
                          r"|invalid frontend message|incomplete (?:startup )?(?:packet|message)"
                          r"|terminating connection")
LOG_PREFIX = re.compile(r"^\S+ \S+ \S+ \[\d+\] ")  # "2026-11-27 07:43:53.472 UTC [2794] "
INSTALL_HINT = ("install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; .ci/run does it), "
                "or run without --database postgresql")


@dataclass(frozen=True)
class Binaries:
    """Where initdb, pg_ctl and postgres are, and which major version they are."""

    bin_dir: Path
    version: str

    def __call__(self, name: str) -> str:
        return str(self.bin_dir / name)


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit()) or (0,)


def find_binaries() -> Binaries:
    """The newest PostgreSQL under /usr/lib/postgresql/<version>/bin, else the one on PATH."""
    candidates = sorted(glob.glob(f"{DEBIAN_BIN_GLOB}/initdb"), key=lambda p: _version_key(str(Path(p).parent)))
    if candidates:
        bin_dir = Path(candidates[-1]).parent
        return Binaries(bin_dir, bin_dir.parent.name)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        bin_dir = Path(on_path).resolve().parent
        return Binaries(bin_dir, _server_version(bin_dir))
    raise PostgresMissing(f"PostgreSQL is not installed: no initdb under {DEBIAN_BIN_GLOB} nor on PATH; {INSTALL_HINT}")


def _server_version(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().rsplit(" ", 1)[-1] if out.returncode == 0 else "unknown"


def available() -> tuple[bool, str]:
    """(PostgreSQL can be started here, why not): for the matrix, which skips the cells it cannot run."""
    try:
        PostgresServer.check_installed()
    except PostgresMissing as exc:
        return False, str(exc)
    return True, ""


def _run_as_user() -> str | None:
    """The user initdb and pg_ctl must run as: None for ourselves, 'postgres' when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ROOT_RUNS_AS)
    except KeyError:
        raise PostgresMissing(f"PostgreSQL refuses to run as root and there is no {ROOT_RUNS_AS!r} user to run it "
                              f"as; {INSTALL_HINT} (the Debian package creates that user)") from None
    if not shutil.which("runuser"):
        raise PostgresMissing("running as root, forkwise needs `runuser` (util-linux) to start PostgreSQL "
                              f"as {ROOT_RUNS_AS!r}")
    return ROOT_RUNS_AS


class PostgresServer:
    """One cluster, from initdb to removal. Use it as a context manager: ``stop()`` always runs.

    ``url("tls")`` connects over loopback TCP with TLS required, ``url("unix")`` over the Unix socket;
    `transports` are those pg_hba.conf lets the app's role in by (both unless told).
    """

    def __init__(self, wait_s: float = PG_CTL_WAIT_S, transports: tuple[str, ...] = pg_auth.TRANSPORTS):
        self.binaries, self.user = self.check_installed()
        self.wait_s = wait_s
        self.transports = pg_auth.check_transports(transports)
        self.dir: Path | None = None
        self._auth: ClusterAuth | None = None
        self.port = 0
        self.stop_problem = ""  # why pg_ctl stop failed, if it did (its processes were then killed)
        self.version = ""  # the running server's own word, e.g. "PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"

    @staticmethod
    def check_installed() -> tuple[Binaries, str | None]:
        """The binaries and the user to run them as; PostgresMissing says what is missing."""
        try:
            import psycopg  # noqa: F401  (the driver the app and forkwise connect with)
        except ImportError:
            raise PostgresMissing("the PostgreSQL driver is not installed: pip install 'forkwise[postgresql]' "
                                  "(psycopg 3)") from None
        return find_binaries(), _run_as_user()

    # --- paths and URLs -------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The cluster's folder, which exists from start() to stop()."""
        if self.dir is None:
            raise DatabaseServerError("the PostgreSQL server is not started")
        return self.dir

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def auth(self) -> ClusterAuth:
        """The cluster's secrets and passfiles, from start() to stop()."""
        if self._auth is None:
            raise DatabaseServerError("the PostgreSQL server is not started")
        return self._auth

    def url(self, transport: str) -> str:
        """The app's SQLAlchemy URL (psycopg 3) for `transport`: "tls" (loopback TCP, TLS required) or
        "unix". It names the app's passfile, never the secret: it travels in the environment."""
        if transport not in self.transports:
            raise ConfigError(f"PostgreSQL transport {transport!r} is not open on this server; "
                              f"open: {', '.join(self.transports)}")
        passfile = quote(str(self.auth.app_passfile))
        if transport == "tls":
            return (f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:{self.port}/{DATABASE}"
                    f"?sslmode=require&passfile={passfile}")
        return (f"postgresql+psycopg://{APP_ROLE}@/{DATABASE}"
                f"?host={quote(str(self.socket_dir))}&port={self.port}&passfile={passfile}")

    def _conninfo(self, database: str = ADMIN_DATABASE) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=database,
                             application_name="forkwise", passfile=str(self.auth.admin_passfile))

    # --- life -----------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        """initdb, a certificate, pg_ctl start, the app's role and database. The caller must call stop()."""
        for orphan in reap_orphans():
            log.warning("removed the PostgreSQL cluster of a forkwise process that is gone: %s", orphan)
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        me = psutil.Process()
        (self.dir / OWNER_FILE).write_text(f"{me.pid} {me.create_time()}\n")
        self.port = free_port()
        self._auth = ClusterAuth(self.dir)
        self._initdb()
        self._configure()
        self._chown()
        # After the chown: the passfiles stay the deployment's user's, unreadable by the cluster's.
        self.auth.write_passfiles(self.socket_dir, self.port)
        self._start()
        with self.admin() as conn:
            self.auth.create_app_role(conn)
            self.version = "PostgreSQL " + conn.execute("show server_version").fetchone()[0]
        return self

    def _initdb(self) -> None:
        """initdb, with the superuser's password from a file that lives only while initdb runs; no
        `trust` line at any moment."""
        pwfile = self.auth.write_initdb_pwfile()
        self._chown()  # initdb runs as the cluster's user, in a directory that user owns
        try:
            self._pg("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                     f"--auth={pg_auth.AUTH_METHOD}", "--encoding=UTF8", "--locale=C", "--no-sync", what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    @contextlib.contextmanager
    def down(self) -> Iterator[PostgresServer]:
        """The server stopped (pg_ctl stop -m fast: every session cut) for the body, then started again."""
        self._stop()
        try:
            yield self
        finally:
            self._start()

    def restart(self) -> float:
        """Stop the server and start it again at once: seconds it took."""
        start = time.monotonic()
        with self.down():
            pass
        return time.monotonic() - start

    def stop(self) -> list[int]:
        """Stop the server and remove its directory, whatever state it is in. Returns the pids that
        had to be killed (none after a clean pg_ctl stop)."""
        if self.dir is None:
            return []
        try:
            if (self.data_dir / "postmaster.pid").exists():
                try:
                    self._stop()
                except DatabaseServerError as exc:  # what is left of the cluster is killed below
                    self.stop_problem = str(exc)
                    log.warning("%s; killing what is left of the cluster", exc)
        finally:
            killed = remove_cluster(self.dir, self.wait_s)
            self.dir, self._auth = None, None
        return killed

    # --- observing --------------------------------------------------------------------

    def connect_admin(self) -> Any:
        """A new connection to the admin database over the Unix socket, autocommit (psycopg)."""
        import psycopg

        return psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=max(1, int(self.wait_s)))

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """A connection to the admin database over the Unix socket, closed on leaving."""
        conn = self.connect_admin()
        try:
            yield conn
        finally:
            conn.close()

    def log_tail(self, size: int = LOG_TAIL_BYTES) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - size))
                return fh.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""

    def log_highlights(self) -> tuple[str, ...]:
        """The server log's telling lines so far (see TELLING_LINE), each once, with its count."""
        return telling_lines(self.log_tail(LOG_READ_BYTES))

    # --- helpers ----------------------------------------------------------------------

    def _start(self) -> None:
        self._pg("pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                 "-t", str(int(self.wait_s)), what="pg_ctl start")

    def _stop(self) -> None:
        self._pg("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(self.wait_s)),
                 what="pg_ctl stop")

    def _pg(self, program: str, *args: str, what: str) -> None:
        """Run initdb or pg_ctl to its end: an interrupt waits until it is done (a pg_ctl killed half-way
        leaves a server or an initdb behind that nobody knows of), and in a session of its own, so
        a Ctrl-C meant for forkwise does not reach it."""
        argv = [self.binaries(program), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        env = {**os.environ, "LC_ALL": "C"}
        with interrupts_held():
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                                  cwd=self.dir, check=False, start_new_session=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-1500:]
            raise DatabaseServerError(f"PostgreSQL {self.binaries.version}: {what} failed (exit {proc.returncode}): "
                                      f"{detail}\n{self.log_tail()[-1500:]}".rstrip())

    def _configure(self) -> None:
        """Loopback and the private socket only, TLS, passwords as SCRAM; pg_hba.conf from forkwise.pg_auth."""
        cert, key = pg_auth.make_certificate(self.folder)
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'", "unix_socket_permissions": "0700",
            "ssl": "on", "ssl_cert_file": f"'{cert}'", "ssl_key_file": f"'{key}'",
            "password_encryption": f"'{pg_auth.AUTH_METHOD}'",
            "logging_collector": "off", "log_min_messages": "warning",
        }
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write("\n# forkwise\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.data_dir / "pg_hba.conf").write_text(pg_auth.hba_conf(self.transports))

    def _chown(self) -> None:
        if not self.user:
            return
        entry = pwd.getpwnam(self.user)
        for root, dirs, files in os.walk(self.folder):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


def cluster_processes(directory: Path) -> list[psutil.Process]:
    """Live processes working in a cluster's directory: the server and its backends (they run in
    the data directory), an initdb or pg_ctl. Found by where they work, not by their environment,
    which PostgreSQL overwrites with its process titles."""
    root, found = str(directory), []
    for proc in psutil.process_iter(["pid", "cwd", "status"]):
        cwd = proc.info["cwd"] or ""
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (cwd == root or cwd.startswith(root + os.sep)):
            found.append(proc)
    return found


def remove_cluster(directory: Path, wait_s: float) -> list[int]:
    """Kill whatever still runs in a cluster's directory, wait for it, remove the directory.
    Returns the pids killed."""
    procs = cluster_processes(directory)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=wait_s)
    shutil.rmtree(directory, ignore_errors=True)
    return [p.pid for p in procs]


def reap_orphans() -> list[Path]:
    """Remove the clusters whose owner process is gone (it was killed before it could stop them)."""
    reaped = []
    for path in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            pid, started = (path / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue  # not made by this code, or being made right now: not ours to judge
        try:
            alive = abs(psutil.Process(int(pid)).create_time() - float(started)) < 1e-3
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            remove_cluster(path, PG_CTL_WAIT_S)
            reaped.append(path)
    return reaped


def telling_lines(log_text: str, keep: int = HIGHLIGHTS_KEPT) -> tuple[str, ...]:
    """The first `keep` distinct telling lines of a PostgreSQL log, time and pid stripped (see distinct_lines)."""
    return distinct_lines(log_text, TELLING_LINE, keep, strip=LOG_PREFIX)
