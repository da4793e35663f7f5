"""Read input ahead while waiting on PostgreSQL, in the same thread.

``run`` over prebuilt items alternates Python's share of a batch (parsing lines, classifying
them, hashing them) with PostgreSQL's (claiming the ids, the upsert, the ledger, the commit),
each waiting for the other on a two-core machine. A second thread to overlap them lost more to
the GIL than it gained: each answer from the database waited for the parsing thread to let go
of the interpreter, dozens of times per batch. Here the waits themselves do the reading: a
connection whose ``wait`` reads one more record ahead, then looks whether PostgreSQL has
answered, until it has. The reading loop then finds those records parsed already.

Only for input that is in memory already (files, read whole): reading stdin or a bucket could
block, and would hold the load's transaction open meanwhile.
"""

from __future__ import annotations

import select
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import suppress
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

T = TypeVar("T")
RV = TypeVar("RV")


class ReadAhead(Generic[T]):
    """The items of ``source`` in order, some of them read ahead by ``step``.

    An error ``source`` raises while read ahead (inside a database wait, where it must not
    escape) is raised where its item would have been. ``step`` also frees what was
    ``discard``-ed, once nothing more is to be read: a batch of parsed items takes a tenth of
    its load's time to free.
    """

    def __init__(
        self,
        source: Iterable[T],
        limit: int,
        budget: int | None = None,
        size: Callable[[T], int] | None = None,
    ) -> None:
        """At most ``limit`` items ahead, and (with ``size``) items of at most ``budget``
        in all: big items are few to a wait anyway, and each one read ahead is held."""
        self._source = iter(source)
        self._limit = limit
        self._budget = budget
        self._size = size
        self._held = 0
        self._ahead: deque[T] = deque()
        self._error: BaseException | None = None
        self._exhausted = False
        self._garbage: deque[list[Any]] = deque()

    def discard(self, items: list[Any]) -> None:
        """Take ``items`` (a list no one else holds) to free them in later steps.

        One list at most waits: when the waits had no time to free the one before, it is
        freed now, so what a run holds does not grow with its input.
        """
        if items:
            self._garbage.append(items)
        while len(self._garbage) > 1:
            self._garbage.popleft()

    def step(self) -> bool:
        """Read one more item ahead, or free one discarded; False when there is nothing to
        do (nothing to read, or ``limit`` items waiting, and nothing to free)."""
        if not self._exhausted and len(self._ahead) < self._limit and not self._full():
            try:
                item = next(self._source)
                self._ahead.append(item)
                if self._size is not None:
                    self._held += self._size(item)
                return True
            except StopIteration:
                self._exhausted = True
            except BaseException as e:
                # Raised where its item would have been. An interruption (Ctrl-C) is raised
                # now too: the source it went through is closed, and must not look finished.
                self._error, self._exhausted = e, True
                if not isinstance(e, Exception):
                    raise
        if self._garbage:
            garbage = self._garbage[0]
            garbage.pop()
            if not garbage:
                self._garbage.popleft()
            return True
        return False

    def close(self) -> None:
        """Drop what is read ahead and what waits to be freed: whatever still holds ``step``
        (a connection kept for reuse) would otherwise keep it all until the process exits."""
        self._ahead.clear()
        self._garbage.clear()
        self._held, self._exhausted = 0, True

    def _full(self) -> bool:
        return self._budget is not None and self._held >= self._budget

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._ahead:
            item = self._ahead.popleft()
            if self._size is not None:
                self._held -= self._size(item)
            return item
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._exhausted:
            raise StopIteration
        return next(self._source)


def _working_while_waiting(
    gen: PQGen[RV], fileno: int, work: Callable[[], bool], cancel: Callable[[], None]
) -> Generator[Wait, Ready | int, RV]:
    """``gen``, doing ``work`` before each wait until the socket is ready or work runs out.

    psycopg's own wait then finds the socket ready (or waits for the rest). An interruption
    (Ctrl-C) during the work stops it and cancels the statement, as psycopg does on Ctrl-C;
    it is raised once PostgreSQL has answered (raised at once, the answer would stay unread
    on the connection), whether the statement then ended or failed.
    """
    poller = select.poll()
    poller.register(fileno, 0)
    interrupted: BaseException | None = None
    cancelled = False
    try:
        wait = next(gen)
        while True:
            poller.modify(
                fileno,
                (select.POLLIN if wait & Wait.R else 0) | (select.POLLOUT if wait & Wait.W else 0),
            )
            if interrupted is None:
                try:
                    while not poller.poll(0) and work():
                        pass
                except BaseException as e:  # raised below, once the answer is read
                    interrupted = e
            if interrupted is not None and not cancelled and wait == Wait.R:
                cancel()  # waiting for the answer only: the statement is at the server
                cancelled = True
            wait = gen.send((yield wait))
    except StopIteration as done:
        if interrupted is not None:
            raise interrupted from None
        return done.value  # type: ignore[no-any-return]
    except BaseException as error:
        if interrupted is not None:
            raise interrupted from error  # the statement's end (canceled) is not the news
        raise


class ReadingConnection(psycopg.Connection[Any]):
    """A connection whose waits for PostgreSQL run ``idle_work`` meanwhile (when set)."""

    idle_work: Callable[[], bool] | None = None

    def _cancel_statement(self) -> None:
        """Ask the server to cancel what runs (Ctrl-C); its answer still has to be read."""
        with suppress(Exception):  # a failed cancel leaves the statement to end by itself
            self.cancel_safe(timeout=5.0)

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        work = self.idle_work
        if work is not None and hasattr(select, "poll"):  # not on Windows: no reading ahead
            gen = _working_while_waiting(gen, self.pgconn.socket, work, self._cancel_statement)
        return super().wait(gen, *args, **kwargs)
