"""Connections to pgstac: credentials from Secrets Manager or libpq variables, never a built DSN."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any

import psycopg

from item_load.errors import DatabaseUnavailable
from item_load.settings import LoadSettings

APPLICATION_NAME = "stactools-ingest-load"


@cache
def _secret(arn: str) -> dict[str, Any]:
    """Fetch the database secret once per process: warm invocations reuse it."""
    import boto3

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return json.loads(value)


def connection_kwargs(settings: LoadSettings) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect``; libpq fills in whatever is not given."""
    kwargs: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout,
        "application_name": APPLICATION_NAME,
        # pypgstac's Loader expects pgstac first on the search path.
        "options": f"-c search_path=pgstac,public -c lock_timeout={settings.lock_timeout_ms}",
        "autocommit": True,
    }
    if settings.pgstac_secret_arn:
        secret = _secret(settings.pgstac_secret_arn)
        kwargs.update(
            host=secret["host"],
            port=secret.get("port", 5432),
            dbname=secret.get("dbname") or secret.get("database"),
            user=secret.get("username") or secret.get("user"),
            password=secret["password"],
        )
    return kwargs


def is_transient(error: BaseException) -> bool:
    """Connection loss, shutdown, lock timeouts, deadlocks: worth retrying the whole batch."""
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn connection-level psycopg errors into DatabaseUnavailable, naming what we were doing."""
    try:
        yield
    except psycopg.Error as e:
        if is_transient(e):
            raise DatabaseUnavailable(f"pgstac unavailable while {what}: {e}".strip()) from e
        raise


class ConnectionCache:
    """One connection reused across batches (warm Lambda invocations, a local worker's loop)."""

    def __init__(self, settings: LoadSettings, **overrides: Any) -> None:
        self.settings = settings
        self.overrides = overrides
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        """The live connection, opening a new one if there is none or the last one broke."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.discard()
        with translate_errors("connecting"):
            self._conn = psycopg.connect(**{**connection_kwargs(self.settings), **self.overrides})
        return self._conn

    def discard(self) -> None:
        """Drop the connection after a failure so the next batch starts on a fresh one."""
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        self._conn = None
