"""Session fixtures: one real PostgreSQL + PostGIS + pgstac per session, a fresh database per test.

The server is the same embedded server ``stactools-ingest local`` runs; pgstac is migrated once
into a template database and every test gets ``CREATE DATABASE … TEMPLATE`` (about 100 ms).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stactools_ingest.embedded import EmbeddedServer

TEMPLATE_DB = "pgstac_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedServer]:
    """A PostgreSQL server for the whole session, in a directory the server user can enter."""
    home = Path(tempfile.mkdtemp(prefix="stactools-ingest-tests-"))
    home.chmod(0o755)
    server = EmbeddedServer(home, durable=False)
    server.start()
    server.ensure_database(TEMPLATE_DB)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


_db_counter = itertools.count()


@dataclass
class TestDatabase:
    """A fresh pgstac database: its name, conninfo and a DSN."""

    server: EmbeddedServer
    name: str

    @property
    def conninfo(self) -> dict:
        return self.server.conninfo(self.name)

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            **self.conninfo, autocommit=True, options="-c search_path=pgstac,public"
        )

    def item_ids(self, collection: str) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM items WHERE collection = %s ORDER BY id", (collection,)
            ).fetchall()
        return [r[0] for r in rows]

    def count(self, collection: str | None = None) -> int:
        with self.connect() as conn:
            if collection is None:
                return conn.execute("SELECT count(*) FROM items").fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM items WHERE collection = %s", (collection,)
            ).fetchone()[0]


@pytest.fixture
def pgstac(pg_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestDatabase]:
    """A fresh pgstac database; libpq variables point at it, as they would in a deployment."""
    name = f"test_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(**pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
            )
        )
    db = TestDatabase(pg_server, name)
    info = db.conninfo
    monkeypatch.setenv("PGHOST", info["host"])
    monkeypatch.setenv("PGPORT", str(info["port"]))
    monkeypatch.setenv("PGUSER", info["user"])
    monkeypatch.setenv("PGDATABASE", name)
    monkeypatch.setenv("PGPASSWORD", info["password"])
    monkeypatch.delenv("PGSTAC_SECRET_ARN", raising=False)
    yield db
    with psycopg.connect(**pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region so boto3 talks to moto, never to AWS."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
