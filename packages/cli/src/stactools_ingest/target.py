"""Which pgstac the CLI talks to: ``--dsn``, ``PGSTAC_DSN``, libpq variables, or embedded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

from ingest_common.errors import IngestError
from stactools_ingest.embedded import EmbeddedServer

LIBPQ_VARS = ("PGHOST", "PGDATABASE", "PGSERVICE")


class DatabaseUnreachable(IngestError):
    """The target pgstac did not answer; nothing was read or changed."""

    exit_code = 3


def home() -> Path:
    """Where the embedded server keeps its data: STACTOOLS_INGEST_HOME or ./.stactools-ingest."""
    return Path(
        os.environ.get("STACTOOLS_INGEST_HOME") or Path.cwd() / ".stactools-ingest"
    ).absolute()


def embedded() -> EmbeddedServer:
    """The embedded server for this directory (running or not)."""
    return EmbeddedServer(home())


def resolve_dsn(dsn: str | None, start_embedded: bool = True) -> str:
    """The connection string to use; starts the embedded server when nothing else is given."""
    dsn = dsn or os.environ.get("PGSTAC_DSN")
    if dsn:
        return dsn
    if any(os.environ.get(v) for v in LIBPQ_VARS):
        return ""  # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE itself
    server = embedded()
    if not server.is_running():
        if not start_embedded:
            raise DatabaseUnreachable(
                "the embedded pgstac is not running; run: stactools-ingest local start"
            )
        print(f"starting the embedded pgstac in {server.home}", file=sys.stderr)
        server.start()
    return server.dsn()


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


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    """An autocommit connection with pgstac on the search path, or a one-line error."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=10,
            options="-c search_path=pgstac,public",
            application_name="stactools-ingest",
            **kwargs,
        )
    except psycopg.OperationalError as e:
        where = redact(dsn) if dsn else "the database named by the PG* variables"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseUnreachable(f"cannot connect to {where}: {first}") from e
