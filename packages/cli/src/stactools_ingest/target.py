"""Which pgstac the CLI talks to: ``--dsn``, ``PGSTAC_DSN``, libpq variables, or embedded.

The embedded server belongs to a *project*: the git top-level that holds the current directory
(the README runs commands from a clone's root, and a subdirectory of it is the same project), or
the current directory outside git. Its home is ``STACTOOLS_INGEST_HOME`` when set, else
``<project>/.stactools-ingest``; when we are root and the server user cannot enter the project
(a clone under ``/root``), it is ``/var/lib/stactools-ingest/<name>-<hash of the project path>``,
chosen without asking, said once, and remembered in ``<project>/.stactools-ingest/home`` so every
later command (and a later ``chmod``) finds the same data. The key alone finds it too.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ingest_common.errors import IngestError
from stactools_ingest.embedded import SERVER_USER, EmbeddedServer, first_closed

LIBPQ_VARS = ("PGHOST", "PGDATABASE", "PGSERVICE")
FALLBACK_BASE = Path("/var/lib/stactools-ingest")
PROJECT_DIR = ".stactools-ingest"
_URI_ECHO = re.compile(r': ".*$')


class DatabaseUnreachable(IngestError):
    """The target pgstac did not answer; nothing was read or changed."""

    exit_code = 3


class NotPgstac(DatabaseUnreachable):
    """The target database answers but has no pgstac; nothing was read or changed."""


class MalformedDsn(IngestError):
    """The DSN given cannot be parsed; a usage error, so click's exit code for those."""

    exit_code = 2


@dataclass(frozen=True)
class Home:
    """Where the embedded server lives, and why when it is not in the project."""

    path: Path
    note: str | None = None  # said the first time a home outside the project is chosen
    pointer: Path | None = None  # where that choice is remembered


def project_dir(cwd: Path | None = None) -> Path:
    """The git top-level holding ``cwd`` (a ``.git`` directory or worktree file), else ``cwd``."""
    cwd = (cwd or Path.cwd()).absolute()
    for directory in [cwd, *cwd.parents]:
        if (directory / ".git").exists():
            return directory
    return cwd


def fallback_home(project: Path) -> Path:
    """The home under /var/lib for ``project``: readable name, hash of the full path for keying."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", project.name).strip("-.")[:40] or "project"
    key = hashlib.sha256(str(project).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return FALLBACK_BASE / f"{name}-{key}"


def locate_home(cwd: Path | None = None) -> Home:
    """The embedded server's home for the project holding ``cwd`` (see the module docstring)."""
    override = os.environ.get("STACTOOLS_INGEST_HOME")
    if override:
        return Home(Path(override).absolute())
    project = project_dir(cwd)
    local = project / PROJECT_DIR
    pointer = local / "home"
    try:
        remembered = pointer.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError, UnicodeDecodeError):
        remembered = ""
    if remembered and "\x00" not in remembered and Path(remembered).is_absolute():
        return Home(Path(remembered))  # anything else is not ours: choose afresh
    if os.geteuid() != 0 or (local / "pgdata").exists():
        return Home(local)  # not root: the server runs as us and can enter whatever we can
    closed = first_closed(local, SERVER_USER)
    if closed is None:
        return Home(local)
    fallback = fallback_home(project)
    note = (
        f"the database server runs as '{SERVER_USER}', which cannot enter {closed}; "
        f"the embedded pgstac of {project} keeps its data in {fallback} "
        f"(set STACTOOLS_INGEST_HOME to choose another place)"
    )
    return Home(fallback, note, pointer)


def remember(home: Home) -> None:
    """Say where a home outside the project is, the first time, and point the project at it."""
    if home.pointer is None or home.pointer.exists():
        return
    print(home.note, file=sys.stderr)
    try:
        home.pointer.parent.mkdir(exist_ok=True)
        home.pointer.write_text(f"{home.path}\n")
    except OSError:
        pass  # a read-only project: the deterministic key finds the same home anyway


def home() -> Path:
    """Where the embedded server of this project keeps its data."""
    return locate_home().path


def embedded() -> EmbeddedServer:
    """The embedded server for this project (running or not)."""
    return EmbeddedServer(home())


def start_embedded_server() -> EmbeddedServer:
    """Start this project's embedded server (saying where, the first time) and return it."""
    where = locate_home()
    server = EmbeddedServer(where.path)
    if not server.is_running():
        remember(where)
        print(f"starting the embedded pgstac in {server.home}", file=sys.stderr)
        server.start()
    return server


def _parse_error(e: Exception) -> str:
    """libpq's reason in one line, without the URI it quotes (a URI may carry a password)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else "cannot parse it"
    return _URI_ECHO.sub("", first)


def check_dsn(dsn: str) -> None:
    """Raise MalformedDsn, in one line, for what libpq would reject before connecting."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise MalformedDsn(f"malformed DSN: {_parse_error(e)}") from None
    for port in str(params.get("port", "")).split(","):
        port = port.strip()
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            shown = port if len(port) <= 20 else port[:19] + "…"
            raise MalformedDsn(
                f"malformed DSN: port must be a number from 1 to 65535, not {shown!r}"
            )


def resolve_dsn(dsn: str | None, start_embedded: bool = True) -> str:
    """The connection string to use; starts the embedded server when nothing else is given."""
    dsn = dsn or os.environ.get("PGSTAC_DSN")
    if dsn:
        check_dsn(dsn)
        return dsn
    if any(os.environ.get(v) for v in LIBPQ_VARS):
        return ""  # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE itself
    if not start_embedded:
        server = embedded()
        if not server.is_running():
            raise DatabaseUnreachable(
                "the embedded pgstac is not running; run: stactools-ingest local start"
            )
        return server.dsn()
    return start_embedded_server().dsn()


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given DSN"
    if "password" not in params:
        return dsn
    params["password"] = "***"
    return psycopg.conninfo.make_conninfo(**params)


def connect(
    dsn: str, connection_class: type[psycopg.Connection] = psycopg.Connection, **kwargs
) -> psycopg.Connection:
    """An autocommit connection to a pgstac database, or a one-line error.

    Checks that pgstac is there before anyone writes: the local queues create their schema on
    first use, and a mistyped ``--dsn`` must not leave a ``stactools_ingest`` schema behind.
    """
    where = redact(dsn) if dsn else "the database named by the PG* variables"
    try:
        conn = connection_class.connect(
            dsn,
            autocommit=True,
            connect_timeout=10,
            options="-c search_path=pgstac,public",
            application_name="stactools-ingest",
            **kwargs,
        )
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseUnreachable(f"cannot connect to {where}: {first}") from e
    except psycopg.ProgrammingError as e:  # a DSN that reached us unchecked (PG* variables)
        raise MalformedDsn(f"malformed DSN: {_parse_error(e)}") from None
    require_pgstac(conn, where)
    return conn


def require_pgstac(conn: psycopg.Connection, where: str) -> None:
    """Close ``conn`` and raise NotPgstac when its database has no pgstac schema."""
    (present,) = conn.execute("SELECT to_regnamespace('pgstac') IS NOT NULL").fetchone()
    if not present:
        conn.close()
        raise NotPgstac(
            f"{where} has no pgstac (schema pgstac not found); migrate it first "
            f"(pypgstac migrate) or point --dsn at a pgstac database"
        )
