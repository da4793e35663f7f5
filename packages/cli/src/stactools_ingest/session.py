"""A worker's hold on the queue database that waits out outages instead of dying of them.

A database restart (fast or immediate stop, crash recovery, a few seconds down) breaks every
connection at once. Each worker thread reaches the database only through its ``Session``: an
operation that fails because the database is gone is retried on a new connection, with jittered
exponential backoff (tenacity), until ``patience`` runs out. Operations must be safe to repeat:
every queue operation either commits whole or not at all, and acts only under the caller's lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from item_load import db
from stactools_ingest.queue import LocalQueues
from stactools_ingest.target import DatabaseUnreachable

logger = logging.getLogger(__name__)

T = TypeVar("T")


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database went away (wait and reconnect), not that a query
    failed: item_load's SQLSTATE classification, plus our own failed connection attempt."""
    return isinstance(error, DatabaseUnreachable) or db.is_outage(error)


class DatabaseGone(DatabaseUnreachable):
    """The database stayed unreachable longer than the run is willing to wait."""


class Session:
    """One thread's queue handle; reconnects after an outage, for up to ``patience`` seconds."""

    def __init__(self, open_queues: Callable[[], LocalQueues], patience: float = 300.0) -> None:
        self._open = open_queues
        self.patience = patience
        self._queues: LocalQueues | None = None
        # A database that never answered is a wrong DSN or a stopped server, not an outage
        # to wait out: the first connection's failure is reported at once.
        self._connected_once = False

    def queues(self) -> LocalQueues:
        """The live handle, opening a new connection if there is none or it broke."""
        q = self._queues
        if q is None or q.conn.closed or q.conn.broken:
            self.close()
            self._queues = self._open()
            self._connected_once = True
        return self._queues

    def close(self) -> None:
        """Close the connection, if any."""
        if self._queues is not None:
            with suppress(Exception):
                self._queues.conn.close()
        self._queues = None

    def _lost(self, error: BaseException) -> bool:
        if not self._connected_once:
            return False
        broken = self._queues is not None and self._queues.conn.broken
        return broken or is_outage(error)

    def _waiting(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        first = str(error).strip().splitlines()[0] if error and str(error).strip() else error
        logger.warning(
            "database unavailable (%s); reconnecting in %.1f s",
            first,
            state.upcoming_sleep,
        )
        self.close()

    def call(self, operation: Callable[[LocalQueues], T]) -> T:
        """Run ``operation``; when the database is gone, wait, reconnect and run it again."""
        try:
            for attempt in Retrying(
                retry=retry_if_exception(self._lost),
                wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5),
                stop=stop_after_delay(self.patience),
                before_sleep=self._waiting,
                reraise=True,
            ):
                with attempt:
                    return operation(self.queues())
        except Exception as e:
            if self._lost(e):
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DatabaseGone(
                    f"the database was unreachable for {self.patience:.0f} s ({first}); "
                    "run the same command again once it is back: finished work is kept"
                ) from e
            raise
        raise AssertionError("unreachable")  # pragma: no cover
