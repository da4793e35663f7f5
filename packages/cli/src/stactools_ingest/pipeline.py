"""Both stages on one machine: ItemGen worker threads and one ItemLoad batcher over local queues.

The workers call the same cores as the Lambdas (``item_gen.core.generate`` and
``item_load.core.BatchLoader``); only the queue underneath differs.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import psycopg

from ingest_api.core import validate
from ingest_common.ledger import (
    GEN_STAGE,
    GENERATED,
    LOAD_STAGE,
    QUEUED,
    clean_request_id,
)
from item_gen.core import Runner, generate
from item_gen.models import CollectionRequest, parse_request
from item_gen.settings import GenSettings
from item_gen.warm import runner_for
from item_load import ledger
from item_load.core import BatchLoader, paused_gc
from item_load.fetch import local_fetcher
from item_load.messages import BatchReader, Document, parse_message
from item_load.notify import Change, ndjson
from item_load.rows import ewkb_hex
from item_load.schema import ensure_schema
from item_load.validation import Span, check_item
from stactools_ingest.failures import Failure, failure_of, label
from stactools_ingest.inputs import (
    InputProblem,
    InputRecord,
    classify,
    message_id,
    record_id,
)
from stactools_ingest.queue import GEN, LOAD, LocalQueues, Message
from stactools_ingest.read_ahead import ReadAhead, ReadingConnection
from stactools_ingest.session import Session, is_outage
from stactools_ingest.target import connect

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """Live progress, shared by the worker threads."""

    requests_done: int = 0
    requests_failed: int = 0
    items_loaded: int = 0
    collections_loaded: int = 0
    items_deleted: int = 0
    load_failed: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass
class LoadTally:
    """What loading some messages did: failed message ids with their verdicts, and counts."""

    failures: dict[str, Failure] = field(default_factory=dict)
    items: int = 0
    collections: int = 0
    deleted: int = 0
    changes: list[Change] = field(default_factory=list)  # for ``run --events``

    def merge(self, other: LoadTally) -> LoadTally:
        return LoadTally(
            {**self.failures, **other.failures},
            self.items + other.items,
            self.collections + other.collections,
            self.deleted + other.deleted,
            self.changes + other.changes,
        )


@dataclass
class RunSummary:
    """What ``stactools-ingest run`` prints at the end (``--json``: one object).

    It speaks of everything this run processed: its input files, and whatever was already
    queued when it started (a killed run's leftovers, redriven dead letters). ``requests`` are
    item and collection requests, ``documents`` STAC documents and input lines that could not
    be used; each ends up ``succeeded`` or ``failed``, so ``requests + documents ==
    succeeded + failed`` once the run has finished.
    """

    requests: int
    documents: int
    succeeded: int
    failed: int
    items_loaded: int
    collections_loaded: int
    items_deleted: int
    dead_letters: int
    input_errors: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Enqueued:
    """Ids of this run's inputs, so the summary speaks about them and not the whole store."""

    gen_ids: list[str] = field(default_factory=list)
    load_ids: list[str] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    new: int = 0

    def include(self, queued: Iterable[tuple[str, str]]) -> None:
        """Add messages that were already queued, so the summary counts them too.

        A queued load message ``gen:<id>`` is the item of request ``<id>``: it counts as that
        request, not as a document.
        """
        gen, load = set(self.gen_ids), set(self.load_ids)
        for queue, mid in queued:
            if queue == LOAD and mid.startswith("gen:"):
                queue, mid = GEN, mid.removeprefix("gen:")
            if queue == GEN and mid not in gen:
                gen.add(mid)
                self.gen_ids.append(mid)
            elif queue == LOAD and mid not in load:
                load.add(mid)
                self.load_ids.append(mid)


Kind = tuple[str, int]
"""An input's queue and priority (``classify``)."""


def _prepared(
    records: Iterable[InputRecord | InputProblem], check_items: bool = False
) -> Iterator[tuple[InputRecord | InputProblem, Kind | InputProblem, str, Checked | None]]:
    """Each input with its queue and priority (or why it cannot be used), its id, and with
    ``check_items`` what the load needs of a prebuilt item and could make now (None: not
    made, or the item fails its check)."""
    for record in records:
        if isinstance(record, InputProblem):
            yield record, record, "", None
            continue
        kind = classify(record)
        if isinstance(kind, InputProblem):
            yield record, kind, "", None
            continue
        checked = None
        if check_items and kind == (LOAD, 1) and record.obj.get("type") == "Feature":
            # Whatever the check raises, the load checks the item again and deals with it
            # (an InvalidItem fails it alone; anything else is isolated by bisection).
            with suppress(Exception):
                checked = (check_item(record.obj), ewkb_hex(record.obj.get("geometry")))
        yield record, kind, record_id(record, kind[0]), checked


def _queued(rows: Iterable[tuple]) -> Iterator[ledger.LedgerEntry]:
    """The ledger's ``queued`` for each queue row ``(queue, id, …, span, request_id)``."""
    for queue, mid, *rest in rows:
        request_id = (rest[4] if len(rest) > 4 else None) or mid
        yield ledger.LedgerEntry(request_id, QUEUED, GEN_STAGE if queue == GEN else LOAD_STAGE)


def _fail(q: LocalQueues, msg: Message, failure: Failure, stage: str) -> bool:
    """Record a failure in the queue and the ledger together; True when now dead."""
    with q.conn.transaction():
        dead = q.fail(msg, failure.reason, permanent=failure.permanent)
        ledger.record(
            q.conn,
            [
                ledger.failure(
                    msg.request_id, stage, failure.reason, dead=dead, attempts=msg.receive_count
                )
            ],
        )
    return dead


DIRECT_BATCH = 3000
"""At least this many prebuilt items per load straight from the input: each load has a fixed
cost (partition checks, staging, newest-wins bookkeeping, a commit), and on 50,000 items 3000
per load took 12.7 s where 1000 took 16.4 s (benchmarks/run_vs_pypgstac.py); 10,000 was slower
again. ``--batch-size`` above it is used as given."""


READ_AHEAD = DIRECT_BATCH
READ_AHEAD_BYTES = 32 << 20
"""At most this many records, and records of this many bytes of input, are read ahead while a
load waits on the database: the next batch, not more (a parsed item holds several times its
line's bytes, and waits fit only a few big ones)."""


def _line_length(record: InputRecord | InputProblem) -> int:
    return record.span.length if isinstance(record, InputRecord) and record.span else 0


Checked = tuple[Span, str | None]
"""What reading ahead made of a prebuilt item for its load: its time span (``check_item``) and
its geometry as hex EWKB (``ewkb_hex``; None where that cannot read it)."""

Direct = tuple[str, InputRecord, Checked | None]
"""A prebuilt item or collection to load straight from the input: its message id, its record,
and what reading ahead made of an item."""


@dataclass(slots=True)
class DirectRecord:
    """A prebuilt item loaded straight from the input; what ``_load_isolated`` reads of a
    ``Message``."""

    id: str
    created_at: datetime | None
    body: Any
    source: str
    checked: Checked | None = None
    """What reading ahead made of it; None: the loader makes it."""
    receive_count: int = 1

    @property
    def request_id(self) -> str:
        """A document loaded straight from the input is its own request."""
        return self.id


class LocalPipeline:
    """Enqueue inputs, then run the workers until both queues are drained.

    Within ``run``, prebuilt items and collections read from a file skip the queue: the
    reading thread loads them in batches straight from the input (a collection at once), and
    records them as done in the same transaction (so a rerun or a resumed run skips them, and
    the summary counts them). Only what that load does not land is queued, by reference, for the
    load worker to retry or dead-letter with the usual verdicts; and while a collection is still
    pending (a collection request, or a collection that failed), items are queued too, so they
    never race it into pgstac. Queueing every item cost more than loading it (a receive, a lease, an
    ack and a second parse per item).
    """

    def __init__(
        self,
        dsn: str,
        gen_workers: int = 2,
        batch_size: int = 1000,
        batch_window: float = 0.5,
        visibility_timeout: float = 600.0,
        max_receives: int = 5,
        gen_settings: GenSettings | None = None,
        runner: Runner | None = None,
        create_collections_if_missing: bool = False,
        outage_patience: float = 300.0,
        events: BinaryIO | None = None,
    ) -> None:
        self.dsn = dsn
        self.gen_workers = gen_workers
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        # One warm worker per generation thread and environment: a thread holding a lease
        # never waits for a slot while the request's visibility timeout runs.
        self.gen_settings = (gen_settings or GenSettings()).model_copy(
            update={"warm_workers_per_env": max(1, gen_workers)}
        )
        self.runner = runner or runner_for(self.gen_settings)
        self.create_collections_if_missing = create_collections_if_missing
        self.outage_patience = outage_patience
        self.events = events
        """Where post-ingest notifications go as NDJSON (``run --events``), once committed."""
        self._events_lock = threading.Lock()
        self.counters = Counters()
        self._loaders: weakref.WeakKeyDictionary[psycopg.Connection, BatchLoader] = (
            weakref.WeakKeyDictionary()
        )
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._load_direct = False
        """Set by ``run`` while its workers run: without them nothing would load queued items."""

    def queues(self, idle_work: Callable[[], bool] | None = None) -> LocalQueues:
        """A queue handle on its own connection (one per thread), with the ledger's table;
        ``idle_work`` runs while it waits on PostgreSQL (``read_ahead``)."""
        conn = connect(self.dsn, ReadingConnection if idle_work else psycopg.Connection)
        if idle_work is not None:
            conn.idle_work = idle_work
        queues = LocalQueues(conn, self.visibility_timeout, self.max_receives)
        ensure_schema(queues.conn)
        return queues

    def session(self, idle_work: Callable[[], bool] | None = None) -> Session:
        """A thread's queue handle that waits out database outages."""
        return Session(lambda: self.queues(idle_work), self.outage_patience)

    # -- input -------------------------------------------------------------------------------

    def enqueue(
        self,
        records: Iterable[InputRecord | InputProblem],
        chunk: int = 2000,
        out: Enqueued | None = None,
        on_problem: Callable[[InputProblem], None] | None = None,
        on_load: Callable[[], None] | None = None,
        read_ahead: bool = False,
    ) -> Enqueued:
        """Put every usable input on its queue; ids come from the input (a document's line, a
        request's content: ``record_id``), so repeats are no-ops.

        Commits every ``chunk`` inputs, so workers already running start on the first ones
        while the rest of the file is read. Stops early when the run is stopping. ``on_load``
        is called after each load straight from the input (progress, while this thread loads).
        ``read_ahead``: read and classify records while waiting on the database (only for
        records whose reading never blocks: files read whole).
        """
        out = out if out is not None else Enqueued()
        prepared: Iterable[tuple] = _prepared(records, check_items=read_ahead)
        ahead: ReadAhead | None = None
        if read_ahead:
            prepared = ahead = ReadAhead(
                prepared, READ_AHEAD, READ_AHEAD_BYTES, lambda t: _line_length(t[0])
            )
            session = self.session(ahead.step)
        else:
            session = self.session()
        rows: list[tuple[str, str, Any, str | None, int]] = []
        direct: list[Direct] = []
        seen: set[tuple[str, str]] = set()
        # already counted (queued before this run started): sent again, not counted twice
        counted = {(GEN, i) for i in out.gen_ids} | {(LOAD, i) for i in out.load_ids}

        def send(q: LocalQueues, batch: list[tuple]) -> int:
            with q.conn.transaction():
                added = q.send_many(batch)
                ledger.record(q.conn, _queued(batch))
            return added

        def flush() -> None:
            if rows:
                batch = list(rows)  # a retried send must see the same rows
                out.new += session.call(lambda q: send(q, batch))
                rows.clear()

        def load_direct() -> None:
            if direct:
                flush()  # a collection read before these items must be pending, visibly
                batch = list(direct)
                direct.clear()
                rows.extend(self._load_from_input(session, batch))
                if ahead is not None:
                    ahead.discard(batch)  # freed while later loads wait, not now
                if len(rows) >= chunk:
                    flush()
                if on_load:
                    on_load()

        for record, kind, mid, checked in prepared:
            if self._stop.is_set():
                break
            if isinstance(kind, InputProblem):
                out.problems.append(kind)
                if on_problem:
                    on_problem(kind)
                continue
            queue, priority = kind
            if (queue, mid) in seen:  # the same object twice in the input is one message
                continue
            seen.add((queue, mid))
            if (queue, mid) not in counted:
                (out.gen_ids if queue == GEN else out.load_ids).append(mid)
            # Only plain items and collections load straight from the input: pointers, S3
            # events and feature collections need reading. A collection loads before the items
            # of its batch (BatchLoader does collections first): they never wait for it queued.
            # Documents from no file (stdin, a crawl) too: a failed one is queued with its body.
            direct_kind = "Feature" if priority == 1 else "Collection"
            if self._load_direct and queue == LOAD and record.obj.get("type") == direct_kind:
                direct.append((mid, record, checked))
                # A collection loads at once: generated items may be waiting for it.
                if direct_kind == "Collection" or len(direct) >= max(self.batch_size, DIRECT_BATCH):
                    load_direct()
                continue
            if queue == LOAD:
                # Queued, so it is stamped when sent: the lines before it that wait in the
                # buffer load first, so this one (a Delete, a pointer, an S3 event...) is later
                # than they are and earlier than any line after it.
                load_direct()
            given = clean_request_id(record.obj.get("request_id")) if queue == GEN else None
            if queue == LOAD and priority == 1 and record.span is not None:
                # a prebuilt item: the queue keeps where it is, the load reads it from there
                rows.append((queue, mid, None, record.source, priority, record.span))
            else:
                rows.append((queue, mid, record.obj, record.source, priority, None, given))
            if len(rows) >= chunk:
                flush()
        flush()  # collections first: a direct load waits for none of them
        if not self._stop.is_set():  # a stopping run loads nothing more; the file is still there
            load_direct()
        flush()
        session.close()
        if ahead is not None:
            ahead.close()
        return out

    def _load_from_input(self, session: Session, batch: list[Direct]) -> list[tuple]:
        """Load prebuilt items straight from the input; the queue rows for those not loaded.

        One transaction claims the items' ids as done, loads them, and queues those whose load
        failed (by reference to their file, or with their body when they have none; for the
        load worker to retry or dead-letter with the usual
        verdicts). Ids the queue already has (a resumed run, a repeated file) are left to it.
        While a collection is pending nothing is loaded: the batch is returned to be queued.
        """

        def as_queued(pairs: list[Direct]) -> list[tuple]:
            # by reference to its file when it has one, else with its body
            return [
                (LOAD, mid, None if r.span else r.obj, r.source, 1, r.span) for mid, r, _ in pairs
            ]

        def attempt(q: LocalQueues) -> LoadTally | None:
            if q.collections_pending():
                return None
            with q.conn.transaction():
                claimed = q.claim_done(LOAD, [(mid, r.source) for mid, r, _ in batch])
                todo = [d for d in batch if d[0] in claimed]
                # No send time: the loader stamps them with the database's now(), the clock
                # queued messages are stamped with.
                records = [DirectRecord(mid, None, r.obj, r.source, c) for mid, r, c in todo]
                tally = self._load_isolated(q.conn, records, {m.id: [m.body] for m in records})
                failed = [d for d in todo if d[0] in tally.failures]
                if failed:
                    q.unclaim(LOAD, [mid for mid, _, _ in failed])
                    q.send_many(as_queued(failed))
            return tally

        tally = session.call(attempt)
        if tally is None:
            return as_queued(batch)
        self._announce(tally.changes)
        self.counters.add(items_loaded=tally.items, collections_loaded=tally.collections)
        return []

    # -- workers -----------------------------------------------------------------------------

    def _gen_worker(self) -> None:
        session = self.session()
        idle = 0.2
        try:
            while not self._stop.is_set():
                messages = session.call(lambda q: q.receive(GEN, 1))
                if not messages:
                    # Back off while there is nothing to generate (a file of prebuilt items):
                    # polling costs the database a query that loading could use.
                    self._stop.wait(idle)
                    idle = min(idle * 2, 2.0)
                    continue
                idle = 0.2
                self._generate_one(session, messages[0])
        finally:
            session.close()

    def _generate_one(self, session: Session, msg: Message) -> None:
        try:
            request = parse_request(msg.body)
            doc = generate(request, self.gen_settings, self.runner)
        except Exception as e:
            failure = failure_of(e, f"request from {msg.source}")
            dead = session.call(lambda q: _fail(q, msg, failure, GEN_STAGE))
            self._report_failure(msg, failure, dead, "requests_failed")
            return
        priority = 0 if isinstance(request, CollectionRequest) else 1
        collection = doc.get("id") if priority == 0 else doc.get("collection")

        def hand_over(q: LocalQueues) -> bool:
            with q.conn.transaction():
                if not q.ack([msg]):
                    return False  # the lease expired and another worker holds the request now
                q.send_many(
                    [(LOAD, f"gen:{msg.id}", doc, msg.source, priority, None, msg.request_id)]
                )
                ledger.record(
                    q.conn,
                    [
                        ledger.LedgerEntry(
                            msg.request_id,
                            GENERATED,
                            GEN_STAGE,
                            collection if isinstance(collection, str) else None,
                            generated=1,
                            attempts=msg.receive_count,
                        )
                    ],
                )
                return True

        if session.call(hand_over):
            self.counters.add(requests_done=1)

    def _report_failure(self, msg: Message, failure: Failure, dead: bool, counter: str) -> None:
        logger.warning(
            "%s message %s from %s failed (receive %d%s): %s",
            msg.queue,
            msg.id,
            msg.source,
            msg.receive_count,
            ", dead-lettered" if dead else "",
            failure.reason,
        )
        self.counters.add(**{counter: 1} if dead else {"retries": 1})

    def _load_worker(self) -> None:
        session = self.session()
        try:
            while not self._stop.is_set():
                # The cyclic GC would walk every leased message body; a round frees its own.
                with paused_gc():
                    worked = self._load_round(session)
                if not worked:
                    self._stop.wait(0.2)
        finally:
            session.close()

    def _load_round(self, session: Session) -> bool:
        """Lease one batch and load it; False when there was nothing to lease."""

        def receive(n: int) -> list[Message]:
            return session.call(lambda q: q.receive(LOAD, n, block_items_on_collections=True))

        messages = receive(self.batch_size)
        filling = messages and len(messages) < self.batch_size
        if filling and session.call(lambda q: q.pending()[GEN]):
            # Generation is still producing: wait a moment to fill a bigger batch.
            self._stop.wait(self.batch_window)
            messages += receive(self.batch_size - len(messages))
        if not messages:
            return False
        self._load_batch(session, messages)
        return True

    def _unwrap(self, messages: list[Message]) -> tuple[dict[str, list[dict]], dict[str, Failure]]:
        """Each message's STAC documents, or why it has none.

        Every message is parsed first, then all their hrefs are read at once (item_load's
        BatchReader, with the local run's href policy); a failure belongs to its message alone.
        """
        reader = BatchReader(local_fetcher())
        reader.read(
            ((m.id, m) for m in messages if m.unreadable is None),
            lambda mid, m: parse_message(m.body, mid, m.created_at.timestamp()),
        )
        bodies: dict[str, list[dict]] = {}
        failures: dict[str, Failure] = {}
        for msg in messages:
            if msg.unreadable is not None:
                failures[msg.id] = Failure(f"{msg.source}: {msg.unreadable}", permanent=True)
                continue
            try:
                bodies[msg.id] = [d.body for d in reader.documents(msg.id)]
            except Exception as e:
                failures[msg.id] = failure_of(e, f"{label(msg.body)} from {msg.source}")
        reader.clear()
        return bodies, failures

    def _load_batch(self, session: Session, messages: list[Message]) -> None:
        """Load a batch and settle its messages in one transaction: exactly once.

        The load's own transactions become savepoints of this one, so the items, the
        acknowledgements and the failures commit together; a crash or an outage before the
        commit leaves both untouched and the batch is simply received again.
        """
        bodies, unusable = self._unwrap(messages)

        def settle(q: LocalQueues) -> tuple[LoadTally, list[tuple[Message, Failure, bool]]]:
            with q.conn.transaction():
                held = q.hold(messages)
                live = [m for m in messages if m.id in held]
                tally = self._load_isolated(q.conn, [m for m in live if m.id in bodies], bodies)
                failures = {**unusable, **tally.failures}
                q.ack([m for m in live if m.id not in failures])
                verdicts = [
                    (m, failures[m.id], _fail(q, m, failures[m.id], LOAD_STAGE))
                    for m in live
                    if m.id in failures
                ]
            return tally, verdicts

        tally, verdicts = session.call(settle)
        self._announce(tally.changes)
        for msg, failure, dead in verdicts:
            self._report_failure(msg, failure, dead, "load_failed")
        self.counters.add(
            items_loaded=tally.items,
            collections_loaded=tally.collections,
            items_deleted=tally.deleted,
        )

    def _announce(self, changes: list[Change]) -> None:
        """Append committed changes to the events file (both loading threads write it)."""
        if self.events is not None and changes:
            with self._events_lock:
                self.events.write(ndjson(changes))
                self.events.flush()

    def _loader(self, conn: psycopg.Connection) -> BatchLoader:
        """One BatchLoader per connection (it checks the pgstac version once)."""
        loader = self._loaders.get(conn)
        if loader is None:
            loader = self._loaders[conn] = BatchLoader(
                conn, self.create_collections_if_missing, notify=self.events is not None
            )
        return loader

    def _load_isolated(
        self,
        conn: psycopg.Connection,
        messages: Sequence[Message | DirectRecord],
        bodies: dict[str, list[dict]],
    ) -> LoadTally:
        """BatchLoader.load on these messages' documents, in a savepoint.

        Whatever a record makes the loader raise (beyond the failures it reports) rolls back
        the savepoint; the messages are then split in halves until the one that raises stands
        alone and fails with its reason. Outages are not a record's fault and propagate.
        """
        if not messages:
            return LoadTally()
        docs = []
        for m in messages:
            span, geometry = (m.checked if isinstance(m, DirectRecord) else None) or (None, None)
            docs.extend(
                Document(
                    m.id,
                    m.created_at.timestamp() if m.created_at else None,
                    body,
                    m.request_id,
                    m.receive_count,
                    span=span,
                    geometry=geometry,
                )
                for body in bodies[m.id]
            )
        try:
            with conn.transaction():
                outcome = self._loader(conn).load(docs)
        except Exception as e:
            if is_outage(e) or conn.broken:
                raise
            if len(messages) == 1:
                msg = messages[0]
                failure = failure_of(e, f"{label(msg.body)} from {msg.source}")
                return LoadTally(failures={msg.id: failure})
            half = len(messages) // 2
            return self._load_isolated(conn, messages[:half], bodies).merge(
                self._load_isolated(conn, messages[half:], bodies)
            )
        return LoadTally(
            failures=dict(outcome.failures),
            items=outcome.items_loaded,
            collections=outcome.collections_loaded,
            deleted=outcome.items_deleted,
            changes=outcome.changes,
        )

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as e:
                self._errors.append(e)
                self._stop.set()

        return run

    # -- the run -----------------------------------------------------------------------------

    def start(self, monitor: Session) -> list[threading.Thread]:
        """Release what a killed run leased, then start the workers (``stop`` ends them)."""
        released = monitor.call(lambda q: q.release_orphans())
        if released:
            logger.info("released %d messages leased by a stopped run", released)
        self._stop.clear()
        threads = [
            threading.Thread(target=self._guard(self._gen_worker), name=f"gen-{n}", daemon=True)
            for n in range(self.gen_workers)
        ]
        threads.append(
            threading.Thread(target=self._guard(self._load_worker), name="load", daemon=True)
        )
        for t in threads:
            t.start()
        return threads

    @property
    def errors(self) -> list[BaseException]:
        """What stopped the workers, if anything did (they all stop at the first)."""
        return list(self._errors)

    def stop(self, threads: Sequence[threading.Thread]) -> None:
        """Stop the workers ``start`` started; each finishes what it holds first."""
        self._stop.set()
        for t in threads:
            t.join()

    def submit(self, objs: Sequence[Any], source: str) -> list[str]:
        """Queue requests and documents for the running workers; their request ids, in order.

        All or nothing (``ingest_api.core.validate``): when any object is unusable, nothing is
        queued and ``Unusable`` names each problem by its position. An object already queued or
        done is not queued again; it answers with the same id (ids come from content, or the
        request's ``request_id``).
        """
        rows: list[tuple] = []
        ids: list[str] = []
        for n, routed in enumerate(validate(objs)):
            mid = message_id(routed.obj)
            queue = GEN if routed.stage == "gen" else LOAD
            rows.append(
                (queue, mid, routed.obj, f"{source}#{n}", routed.priority, None, routed.given_id)
            )
            ids.append(routed.given_id or mid)

        def send(q: LocalQueues) -> None:
            with q.conn.transaction():
                q.send_many(rows)
                ledger.record(q.conn, _queued(rows))

        session = self.session()
        try:
            session.call(send)
        finally:
            session.close()
        return ids

    def run(
        self,
        enqueued: Enqueued | None = None,
        on_tick: Callable[[Counters, dict[str, int]], None] | None = None,
        records: Iterable[InputRecord | InputProblem] | None = None,
        on_problem: Callable[[InputProblem], None] | None = None,
        read_ahead: bool = False,
    ) -> RunSummary:
        """Run until nothing is pending, then summarise what this run processed.

        ``records`` are enqueued (into ``enqueued``) while the workers already run, so loading
        starts with the first chunk instead of after the whole file was read.
        """
        enqueued = enqueued if enqueued is not None else Enqueued()
        started = time.perf_counter()

        def tick(session: Session) -> dict[str, int]:
            pending = session.call(lambda q: q.pending())
            if on_tick:
                on_tick(self.counters, pending)
            return pending

        monitor = self.session()
        enqueued.include(monitor.call(lambda q: q.queued()))
        threads = self.start(monitor)
        try:
            if records is not None:
                self._load_direct = True
                try:
                    # Parsed inputs are acyclic; the cyclic collector would walk them all.
                    with paused_gc():
                        self.enqueue(
                            records,
                            out=enqueued,
                            on_problem=on_problem,
                            on_load=on_tick and (lambda: tick(monitor)),
                            read_ahead=read_ahead,
                        )
                finally:
                    self._load_direct = False
            while not self._stop.is_set():
                pending = tick(monitor)
                if not pending[GEN] and not pending[LOAD]:
                    break
                self._stop.wait(0.25)
        finally:
            self.stop(threads)
        if self._errors:
            monitor.close()
            raise self._errors[0]
        seconds = time.perf_counter() - started
        summary = monitor.call(lambda q: self.summarise(q, enqueued, seconds))
        monitor.close()
        return summary

    def summarise(self, queues: LocalQueues, enqueued: Enqueued, seconds: float) -> RunSummary:
        """Count what this run processed by outcome: a request succeeds when its item landed."""
        requests = queues.request_outcomes(enqueued.gen_ids)
        docs = queues.states(LOAD, enqueued.load_ids)
        dead = requests["dead"] + docs["dead"]
        # A document the queue does not know at all was neither loaded nor dead-lettered: its
        # load straight from the input was lost with its commit (a server without durable
        # commits that crashed). It failed; running the file again loads it.
        unknown = len(enqueued.load_ids) - docs["ready"] - docs["done"] - docs["dead"]
        if unknown:
            logger.warning(
                "%d documents of this run are neither loaded nor queued (a commit was lost); "
                "run the same input again to load them",
                unknown,
            )
        return RunSummary(
            requests=len(enqueued.gen_ids),
            documents=len(enqueued.load_ids) + len(enqueued.problems),
            succeeded=requests["done"] + docs["done"],
            failed=dead + len(enqueued.problems) + unknown,
            items_loaded=self.counters.items_loaded,
            collections_loaded=self.counters.collections_loaded,
            items_deleted=self.counters.items_deleted,
            dead_letters=dead,
            input_errors=len(enqueued.problems),
            seconds=round(seconds, 3),
        )
