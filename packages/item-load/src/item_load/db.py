"""Connections to pgstac: credentials from Secrets Manager or libpq variables, never a built DSN."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any, TypeVar

import psycopg
from pypgstac.db import PgstacDB
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ingest_common.errors import PermanentError
from item_load.errors import DatabaseUnavailable
from item_load.settings import LoadSettings

APPLICATION_NAME = "stactools-ingest-load"

T = TypeVar("T")
logger = logging.getLogger(__name__)


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
        # pypgstac's Loader expects pgstac first on the search path; pgstac names partitions
        # and compares instants in the session's time zone, which must be UTC.
        "options": (
            f"-c search_path=pgstac,public -c lock_timeout={settings.lock_timeout_ms} "
            "-c TimeZone=UTC"
        ),
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


# SQLSTATEs that are the server's trouble, never a record's: the whole batch is retried.
_OUTAGE_CLASSES = frozenset({"08", "53", "58"})  # connection, insufficient resources, system
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect now
# Contention between loaders: retried in-process (the whole transaction), as pypgstac does.
SERIALIZATION_FAILURE, DEADLOCK, CHECK_VIOLATION, LOCK_NOT_AVAILABLE = (
    "40001",
    "40P01",
    "23514",  # pypgstac retries it: two sessions widening one partition's constraints
    "55P03",  # lock_timeout while another loader holds the collection
)
_RETRYABLE_STATES = frozenset(
    {SERIALIZATION_FAILURE, DEADLOCK, CHECK_VIOLATION, LOCK_NOT_AVAILABLE}
)
RETRY_ATTEMPTS = 4
RETRY_SECONDS = 20.0


def _sqlstate(error: BaseException) -> str | None:
    return error.sqlstate if isinstance(error, psycopg.Error) else None


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means pgstac is out of reach, so no record of the batch is to blame.

    By SQLSTATE: class 08 (connection), 53 (server resources), 58 (server I/O), 57P01-03
    (shutdown, starting up). An error without a SQLSTATE comes from libpq or psycopg itself:
    connection trouble (OperationalError, InterfaceError: refused, lost, closed) is an outage;
    a value psycopg cannot send (DataError: a NUL in text) is the record's fault.
    """
    if isinstance(error, DatabaseUnavailable):
        return True
    if not isinstance(error, psycopg.Error):
        return False
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES


def is_retryable(error: BaseException) -> bool:
    """Contention (serialization, deadlock, partition check race, lock timeout): try again."""
    return _sqlstate(error) in _RETRYABLE_STATES


def fails_batch(error: BaseException) -> bool:
    """An outage, or contention that outlasted its retries; a check violation that outlasts
    them is a row's own (a site's CHECK constraint), so it fails the row, not the batch."""
    return is_outage(error) or (is_retryable(error) and _sqlstate(error) != CHECK_VIOLATION)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.warning(
        "contention in pgstac; retrying the transaction",
        extra={
            "attempt": state.attempt_number,
            "sqlstate": _sqlstate(error) if error else None,
            "reason": str(error).strip(),
        },
    )


def retrying(fn: Callable[[], T], attempts: int = RETRY_ATTEMPTS) -> T:
    """``fn()``, retried on contention with jittered exponential backoff; re-raises when exhausted.

    ``fn`` must be a whole transaction: a deadlock or serialization failure is resolved only by
    running the transaction again, not a statement inside it. Retries stop after
    ``RETRY_SECONDS`` too: a lock wait that already took that long (LOCK_TIMEOUT_MS) is left to
    SQS's retry rather than eating the invocation's time.
    """
    for attempt in Retrying(
        stop=stop_after_attempt(attempts) | stop_after_delay(RETRY_SECONDS),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        retry=retry_if_exception(is_retryable),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def is_permanent(error: BaseException) -> bool:
    """Whether the same record would fail the same way again, so it is dead-lettered at once.

    Bad input (PermanentError), or a row PostgreSQL refused for its data (any SQLSTATE that is
    neither an outage, nor contention, nor a cancelled statement), or a value psycopg cannot
    send. Anything else, an unexpected error included, may pass: SQS retries it.
    """
    if isinstance(error, PermanentError):
        return True
    if not isinstance(error, psycopg.Error) or is_outage(error) or is_retryable(error):
        return False
    return error.sqlstate is None or error.sqlstate[:2] != "57"


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn an outage (or contention retried to exhaustion) into DatabaseUnavailable."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except psycopg.Error as e:
        if fails_batch(e):
            raise DatabaseUnavailable(f"pgstac unavailable while {what}: {e}".strip()) from e
        raise


class _NoPool:
    """Stands in for the pool PgstacDB builds; our connection is given, never pooled."""

    def check(self) -> None:
        """Nothing to check: a broken connection surfaces as an outage and is discarded."""

    def putconn(self, conn: psycopg.Connection) -> None:
        """The connection is ours (ConnectionCache), not the pool's."""

    def close(self) -> None:
        """Nothing to close."""


class ConnectionPgstacDB(PgstacDB):
    """pypgstac's PgstacDB over one connection we own.

    ``PgstacDB.connect`` builds a ConnectionPool (worker threads that connect with libpq
    defaults) even when it was given a connection; this one never builds it.
    """

    def __init__(self, connection: psycopg.Connection) -> None:
        super().__init__(connection=connection)

    def get_pool(self) -> Any:
        """No pool; ``connect`` then returns the connection it was given."""
        return _NoPool()


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
