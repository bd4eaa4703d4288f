"""Who may connect to forkwise's own PostgreSQL (forkwise.postgres), and how they prove it.

Each cluster gets two random secrets, made at start and never shown: one for its superuser, which
only forkwise's own set-up and observing connections use, over the Unix socket in the cluster's
private (0700) directory; one for the app's role, which owns the app's database and nothing else
(not a superuser: no ``COPY ... PROGRAM``, no server files). Each secret reaches libpq through a
passfile of its own (mode 0600, owned by the user forkwise runs as) named by a ``passfile=``
connection parameter: the app's URL carries the file's path, never the secret, so neither argv nor
the environment holds it. ``pg_hba.conf`` lets in what the transports in use need, with
scram-sha-256, and rejects everything else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise.errors import ConfigError, DatabaseServerError, PostgresMissing

SUPERUSER = "forkwise_admin"  # the cluster's superuser: forkwise's own connections, Unix socket only
APP_ROLE = "forkwise_app"  # the app's role: owns DATABASE, nothing more
DATABASE = "forkwise"  # the app's database
AUTH_METHOD = "scram-sha-256"
# How the app reaches the server: loopback TCP with TLS required, or the Unix socket.
TRANSPORTS = ("tls", "unix")
SECRET_BYTES = 32
INITDB_PWFILE = "superuser.pw"  # the superuser's secret for initdb, removed as soon as it has run
ADMIN_PASSFILE = "admin.pgpass"
APP_PASSFILE = "app.pgpass"


def check_transports(transports: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or not transports:
        raise ConfigError(f"unknown PostgreSQL transport {unknown or transports!r}; valid: {', '.join(TRANSPORTS)}")
    return transports


def hba_conf(transports: tuple[str, ...]) -> str:
    """pg_hba.conf: the superuser over the Unix socket, the app's role to its own database over the
    transports in use, each with a password (scram-sha-256); every other connection rejected."""
    lines = [f"local all {SUPERUSER} {AUTH_METHOD}"]
    if "unix" in check_transports(transports):
        lines.append(f"local {DATABASE} {APP_ROLE} {AUTH_METHOD}")
    if "tls" in transports:
        lines.append(f"hostssl {DATABASE} {APP_ROLE} 127.0.0.1/32 {AUTH_METHOD}")
    # Explicit, though libpq's default for an unmatched connection is the same: nothing else gets in.
    lines += ["local all all reject", "local replication all reject",
              "host all all all reject", "host replication all all reject"]
    return "# written by forkwise (forkwise.pg_auth): nothing but these gets in\n" + "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> Path:
    """A new file only its owner can read (0600 from its creation: never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def _passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def passfile_line(host: str, port: int, database: str, user: str, secret: str) -> str:
    """One line of a libpq password file (hostname:port:database:username:password)."""
    return ":".join(_passfile_field(v) for v in (host, str(port), database, user, secret)) + "\n"


@dataclass(frozen=True)
class ClusterAuth:
    """A cluster's two secrets (kept out of repr) and the files that hand them to libpq."""

    folder: Path  # the cluster's private directory
    superuser_secret: str = field(default_factory=lambda: secrets.token_urlsafe(SECRET_BYTES), repr=False)
    app_secret: str = field(default_factory=lambda: secrets.token_urlsafe(SECRET_BYTES), repr=False)

    @property
    def initdb_pwfile(self) -> Path:
        return self.folder / INITDB_PWFILE

    @property
    def admin_passfile(self) -> Path:
        return self.folder / ADMIN_PASSFILE

    @property
    def app_passfile(self) -> Path:
        return self.folder / APP_PASSFILE

    def write_initdb_pwfile(self) -> Path:
        """The superuser's secret for initdb --pwfile (initdb runs as the cluster's user: chown it)."""
        return write_private(self.initdb_pwfile, self.superuser_secret + "\n")

    def write_passfiles(self, socket_dir: Path, port: int) -> None:
        """The superuser's passfile (the socket only) and the app's (its database, both transports).
        Written after the cluster's files are handed to its user: these stay ours."""
        write_private(self.admin_passfile, passfile_line(str(socket_dir), port, "*", SUPERUSER, self.superuser_secret))
        write_private(self.app_passfile,
                      passfile_line("127.0.0.1", port, DATABASE, APP_ROLE, self.app_secret)
                      + passfile_line(str(socket_dir), port, DATABASE, APP_ROLE, self.app_secret))

    def create_app_role(self, conn: Any) -> None:
        """The app's role (not a superuser, no other privilege) and its database, which it owns.
        `conn`: the superuser's. The server gets the SCRAM verifier, made here, never the secret:
        a statement the server logs cannot give it away."""
        from psycopg import sql

        verifier = conn.pgconn.encrypt_password(self.app_secret.encode(), APP_ROLE.encode(), AUTH_METHOD.encode())
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                             "PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(verifier.decode())))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(APP_ROLE)))


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made now, valid for two days: (certificate, key)."""
    if not shutil.which("openssl"):
        raise PostgresMissing("PostgreSQL's TLS listener needs a certificate and `openssl` is not installed")
    cert, key = folder / "server.crt", folder / "server.key"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise DatabaseServerError(f"openssl could not make a certificate: {proc.stderr.strip()[-500:]}")
    os.chmod(key, 0o600)
    return cert, key
