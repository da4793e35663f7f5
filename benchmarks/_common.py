"""Shared set-up for benchmarks: an embedded server with a pgstac template, fresh databases."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from stactools_ingest.embedded import EmbeddedServer  # noqa: E402

TEMPLATE = "pgstac_template"


@contextmanager
def server() -> Iterator[EmbeddedServer]:
    """A throwaway server (fsync off, as in the tests) with a migrated template database."""
    home = Path(tempfile.mkdtemp(prefix="stactools-ingest-bench-"))
    home.chmod(0o755)
    srv = EmbeddedServer(home, durable=False)
    srv.start(say=lambda m: None)
    srv.ensure_database(TEMPLATE)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def fresh_db(srv: EmbeddedServer, name: str) -> str:
    """Create ``name`` from the template (dropping an old one) and return its DSN."""
    with psycopg.connect(**srv.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    return srv.dsn(name)


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def print_table(rows: list[tuple], headers: tuple) -> None:
    """A plain fixed-width table."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:>{w}}}" for w in widths)
    print(line.format(*headers))
    for row in rows:
        print(line.format(*row))


def print_json(result: dict) -> None:
    """The final machine-readable line."""
    print(json.dumps(result))
