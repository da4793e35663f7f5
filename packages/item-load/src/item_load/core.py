"""Load a batch of STAC documents into pgstac: validate, deduplicate, COPY, isolate what fails.

The stage core: it takes plain documents and a connection and returns which messages failed and
why, so the Lambda handler, the local worker and the benchmarks all run exactly this code.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from pypgstac.load import Loader, Methods

from ingest_common.collection_settings import PARTITION_TRUNC_KEY, PARTITION_TRUNCS
from ingest_common.ledger import LOADED, SUPERSEDED, is_status_report
from item_load import ledger
from item_load.db import ConnectionPgstacDB, fails_batch, is_permanent, retrying, translate_errors
from item_load.errors import DatabaseUnavailable, InvalidCollection, InvalidItem
from item_load.errors import label as _label
from item_load.messages import Document, is_collection
from item_load.notify import Change
from item_load.rows import partition_name
from item_load.schema import ensure_schema
from item_load.upsert import CollectionWriter, Entry, bisect_load, error_text
from item_load.validation import Span, check_collection, check_item

logger = logging.getLogger(__name__)

# Connections whose pgstac version pypgstac has accepted.
_version_checked: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message failed, and whether it can ever succeed.

    ``permanent``: retrying the same message fails the same way (bad input, a row PostgreSQL
    refuses), so it is dead-lettered at once. Otherwise it is retried: the collection may be on
    its way, contention may pass, an unexpected error may be ours rather than the message's.
    """

    reason: str
    permanent: bool


@dataclass
class LoadOutcome:
    """What happened to a batch: failed message ids with their reasons, and counts.

    ``superseded`` counts documents (items and collections) that succeeded without changing
    anything because pgstac holds, or the batch carried, content from a newer message.
    """

    failures: dict[str, Failure] = field(default_factory=dict)
    items_loaded: int = 0
    collections_loaded: int = 0
    superseded: int = 0
    items_deleted: int = 0
    changes: list[Change] = field(default_factory=list)
    """Items created or changed, for post-ingest notifications (when the loader collects them)."""
    # Why each failed document failed, by id(document): a message may carry many documents.
    document_failures: dict[int, str] = field(default_factory=dict, repr=False)

    def fail(self, doc: Document, reason: str, permanent: bool = True) -> None:
        """Mark a document's message failed; its first reason is kept, or its first permanent
        one: a message with one document that can never load can never succeed."""
        known = self.failures.get(doc.message_id)
        if known is None or (permanent and not known.permanent):
            self.failures[doc.message_id] = Failure(reason, permanent)
        self.document_failures.setdefault(id(doc), reason)
        logger.warning(
            "rejected %s %s",
            doc.body.get("type"),
            doc.body.get("id"),
            extra={
                "message_id": doc.message_id,
                "collection": _collection_of(doc),
                "item_id": doc.body.get("id"),
                "reason": reason,
                "permanent": permanent,
            },
        )


class _GcPause:
    """Counts the pauses in force across threads: the collector is one per process.

    A pause that restored what it found on entry would undo another thread's: ``run``'s
    reading thread pauses it for the whole input while its load worker pauses it around each
    poll, and the worker's first idle poll re-enabled it under the reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._restore = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        """Pause the cyclic garbage collector until every pause in force has ended.

        A batch allocates hundreds of thousands of small, acyclic objects; every generation-2
        pass walks all of them, which cost a third of the handler's time in
        benchmarks/load.py. Reference counting still frees everything; the collector runs again
        after the last pause, unless the caller had disabled it.
        """
        with self._lock:
            if self._depth == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._restore:
                    gc.enable()


paused_gc = _GcPause()


def _collection_of(doc: Document) -> Any:
    return doc.body.get("id") if is_collection(doc.body) else doc.body.get("collection")


def _take_partition_trunc(doc: Document) -> tuple[bool, str | None]:
    """Whether a collection asks for a partitioning, and which (None: one partition), taken
    out of its body (it is not STAC)."""
    if PARTITION_TRUNC_KEY not in doc.body:
        return False, None
    value = doc.body[PARTITION_TRUNC_KEY]
    if value is not None and value not in PARTITION_TRUNCS:
        raise InvalidCollection(
            f"collection {_label(doc.body['id'])} has {PARTITION_TRUNC_KEY!r} {value!r:.40}; "
            "pgstac partitions by 'year' or 'month' (or null)"
        )
    # a new dict: the message's own body stays whole for a retry
    doc.body = {k: v for k, v in doc.body.items() if k != PARTITION_TRUNC_KEY}
    return True, value


def minimal_collection(collection_id: str) -> dict[str, Any]:
    """A valid placeholder collection for CREATE_COLLECTIONS_IF_MISSING; replace it later."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": (
            f"Created by stactools-ingest because items arrived for '{collection_id}' before "
            "its collection; load the real collection to replace this one."
        ),
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


def _newest(
    docs: Iterable[Document], key: Callable[[Document], Any]
) -> tuple[list[Document], list[tuple[Document, Document]]]:
    """One document per key: the newest by send time, later in the batch on a tie.

    Returns the winners, and each older copy with the winner that displaced it. (Within a
    batch a copy with a send time beats one without; across batches none counts as now.)
    """
    best: dict[Any, tuple[float, int, Document]] = {}
    for n, doc in enumerate(docs):
        k = key(doc)
        rank = (doc.sent_at if doc.sent_at is not None else float("-inf"), n)
        if k not in best or rank >= best[k][:2]:
            best[k] = (*rank, doc)
    winners = {k: entry[2] for k, entry in best.items()}
    losers = [(doc, winners[key(doc)]) for doc in docs if winners[key(doc)] is not doc]
    return list(winners.values()), losers


def _settle_older_copies(
    losers: Sequence[tuple[Document, Document]], outcome: LoadOutcome, kind: str
) -> list[Document]:
    """An older copy succeeds (superseded) if its newer copy did; otherwise it fails too.

    It must not be reported loaded when it was not: it is retried, and loads then unless a
    newer copy has landed meanwhile. Returns the superseded ones, for the ledger.
    """
    superseded = []
    for loser, winner in losers:
        reason = outcome.document_failures.get(id(winner))
        if reason is None:
            outcome.superseded += 1
            superseded.append(loser)
            continue
        outcome.fail(
            loser,
            f"{kind} {_label(loser.body.get('id'))}: a newer copy in message "
            f"{_label(winner.message_id)} was not loaded ({reason}); this older copy was not "
            "loaded either and will be retried",
            permanent=False,
        )
    return superseded


class BatchLoader:
    """Loads batches through one connection: collections with pypgstac's Loader, items with a
    CollectionWriter per collection."""

    def __init__(
        self,
        conn: psycopg.Connection,
        create_collections_if_missing: bool = False,
        stats_interval: float = 60.0,
        toast_compression: str = "lz4",
        record_ledger: bool = True,
        notify: bool = False,
    ):
        self.conn = conn
        self.create_collections_if_missing = create_collections_if_missing
        self.loader = Loader(ConnectionPgstacDB(conn))
        self.writer = CollectionWriter(conn, self.loader, stats_interval, toast_compression)
        self.writer.ledger = record_ledger
        self.writer.notify = notify
        if conn not in _version_checked:  # once per connection, not once per batch
            with translate_errors("checking the pgstac version"):
                self.loader.check_version()
            _version_checked.add(conn)
        try:
            ensure_schema(conn)
        except psycopg.Error as e:
            # Not any record's fault: the deployment cannot hold the newest-wins table.
            raise DatabaseUnavailable(
                f"cannot create the stactools_ingest tables ({error_text(e)}); grant this role "
                "CREATE on the database, or run item_load.schema.DDL once as an owner"
            ) from e

    @property
    def record_ledger(self) -> bool:
        """Whether loads write the ledger (``LEDGER=false`` turns it off)."""
        return self.writer.ledger

    @record_ledger.setter
    def record_ledger(self, value: bool) -> None:
        self.writer.ledger = value

    # -- collections -------------------------------------------------------------------------

    def _upsert_collections(
        self,
        docs: Sequence[Document],
        mode: Methods,
        superseded: set[int],
        truncs: dict[str, str | None] | None = None,
    ) -> None:
        """Upsert the collections not older than what pgstac holds; mark the rest superseded.

        The claim (``applied_collections``) and the upsert share one transaction: a refused
        collection leaves no claim behind, and the row lock orders concurrent loaders. So does
        the partitioning a collection asks for (``truncs``): pgstac's trigger repartitions the
        items it already holds when it changes.
        """
        with self.conn.transaction():
            claimed = {
                row[0]
                for row in self.conn.execute(
                    """
                    INSERT INTO stactools_ingest.applied_collections AS a (id, sent_at)
                    SELECT n.id, coalesce(to_timestamp(n.sent), now())
                    FROM unnest(%s::text[], %s::float8[]) AS n(id, sent)
                    ON CONFLICT (id) DO UPDATE SET sent_at = EXCLUDED.sent_at
                    WHERE a.sent_at <= EXCLUDED.sent_at
                    RETURNING id
                    """,
                    ([d.body["id"] for d in docs], [d.sent_at for d in docs]),
                )
            }
            for doc in docs:
                if doc.body["id"] in claimed:
                    superseded.discard(id(doc))
                else:
                    superseded.add(id(doc))
            fresh = [d.body for d in docs if d.body["id"] in claimed]
            if fresh:
                self.loader.load_collections(iter(fresh), mode)
            if self.record_ledger:
                ledger.record(
                    self.conn,
                    (
                        ledger.for_document(
                            d, LOADED if d.body["id"] in claimed else SUPERSEDED, d.body["id"]
                        )
                        for d in docs
                        if d.request_id is not None
                    ),
                )
            for coll_id, trunc in (truncs or {}).items():
                if coll_id in claimed:
                    self.conn.execute(
                        "UPDATE collections SET partition_trunc = %s "
                        "WHERE id = %s AND partition_trunc IS DISTINCT FROM %s",
                        (trunc, coll_id, trunc),
                    )

    def load_collections(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Upsert collections first, so items of the same batch find them."""
        valid = []
        truncs: dict[str, str | None] = {}  # partitioning asked for, by collection id
        for doc in docs:
            try:
                check_collection(doc.body)
                asked, trunc = _take_partition_trunc(doc)
            except InvalidCollection as e:
                outcome.fail(doc, str(e))
            else:
                valid.append(doc)
                if asked:
                    truncs[doc.body["id"]] = trunc
        winners, losers = _newest(valid, lambda d: d.body["id"])
        if not winners:
            return
        superseded: set[int] = set()
        failed = bisect_load(
            winners,
            lambda rows: retrying(
                lambda: self._upsert_collections(rows, Methods.upsert, superseded, truncs)
            ),
            retried=True,
        )
        for doc, error in failed:
            superseded.discard(id(doc))
            outcome.fail(
                doc,
                f"collection {_label(doc.body['id'])} rejected by pgstac: {error_text(error)}",
                is_permanent(error),
            )
        outcome.superseded += len(superseded)
        outcome.collections_loaded += len(winners) - len(failed) - len(superseded)
        self._record_superseded(_settle_older_copies(losers, outcome, "collection"))

    def _existing_collections(
        self, ids: Iterable[str]
    ) -> tuple[set[str], list[tuple[str, Exception]]]:
        """Which collections exist, and the ids PostgreSQL cannot even look up (a NUL), why."""
        found: set[str] = set()

        def look(group: Sequence[str]) -> None:
            with self.conn.transaction():
                rows = self.conn.execute(
                    "SELECT id FROM collections WHERE id = ANY(%s)", (list(group),)
                ).fetchall()
            found.update(r[0] for r in rows)

        unreadable = bisect_load(sorted(set(ids)), look)
        return found, unreadable

    def _create_placeholders(self, collections: Sequence[str]) -> None:
        with self.conn.transaction():
            self.loader.load_collections(
                iter([minimal_collection(c) for c in collections]), Methods.ignore
            )

    # -- items -------------------------------------------------------------------------------

    def load_items(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Validate, deduplicate and load items, collection by collection."""
        spans: dict[int, Span] = {}
        for doc in docs:
            try:
                spans[id(doc)] = doc.span if doc.span is not None else check_item(doc.body)
            except InvalidItem as e:
                outcome.fail(doc, str(e))
        candidates = [doc for doc in docs if id(doc) in spans]
        winners, losers = _newest(candidates, lambda d: (d.body["collection"], d.body["id"]))

        by_collection: dict[str, list[tuple[Document, Span]]] = defaultdict(list)
        for doc in winners:
            by_collection[doc.body["collection"]].append((doc, spans[id(doc)]))

        existing, unreadable = self._existing_collections(by_collection)
        for collection, error in unreadable:
            for doc, _ in by_collection.pop(collection):
                outcome.fail(
                    doc,
                    f"item {_label(doc.body['id'])}: its collection {_label(collection)} cannot "
                    f"be looked up in pgstac ({error_text(error)}); fix the collection id",
                    is_permanent(error),
                )
        missing = [c for c in by_collection if c not in existing]
        if missing and self.create_collections_if_missing:
            refused = bisect_load(
                missing,
                lambda group: retrying(lambda: self._create_placeholders(group)),
                retried=True,
            )
            for collection, error in refused:
                for doc, _ in by_collection.pop(collection):
                    outcome.fail(
                        doc,
                        f"item {_label(doc.body['id'])}: could not create a placeholder for its "
                        f"collection {_label(collection)} ({type(error).__name__}: "
                        f"{error_text(error)})",
                        is_permanent(error),
                    )
            created = [c for c in missing if c in by_collection]
            if created:
                logger.info("created placeholder collections", extra={"collections": created})
            missing = []
        for collection in missing:
            for doc, _ in by_collection.pop(collection):
                outcome.fail(
                    doc,
                    f"collection '{collection}' does not exist in pgstac (item "
                    f"{doc.body['id']}); load the collection first, or set "
                    "CREATE_COLLECTIONS_IF_MISSING=true",
                    permanent=False,  # the collection may be on its way: let SQS retry
                )
        Loader.collection_json.cache_clear()  # another loader may have changed base_item
        for collection, coll_docs in by_collection.items():
            try:
                self._load_collection_items(collection, coll_docs, outcome)
            except Exception as e:
                if fails_batch(e):
                    raise
                for doc, _ in coll_docs:
                    outcome.fail(
                        doc,
                        f"item {_label(doc.body['id'])} of collection {_label(collection)} "
                        f"could not be loaded ({type(e).__name__}: {error_text(e)})",
                        is_permanent(e),
                    )
        self._record_superseded(_settle_older_copies(losers, outcome, "item"))

    def _record_superseded(self, docs: Sequence[Document]) -> None:
        """The ledger's word on older copies a newer one in the same batch beat: their
        requests changed nothing (after the winners' transactions: nothing to hold back)."""
        entries = [
            ledger.for_document(d, SUPERSEDED, d.body.get("collection") or d.body.get("id"))
            for d in docs
            if d.request_id is not None
        ]
        if not (self.record_ledger and entries):
            return

        def write() -> None:
            with self.conn.transaction():
                ledger.record(self.conn, entries)

        retrying(write)  # contention is retried; an outage fails the batch, as any write's

    def _load_collection_items(
        self, collection: str, docs: Sequence[tuple[Document, Span]], outcome: LoadOutcome
    ) -> None:
        coll_json = self.loader.collection_json(collection)
        _, key, partition_trunc = coll_json
        entries = [
            Entry(doc, span, partition_name(key, partition_trunc, span.lower)) for doc, span in docs
        ]
        refused: list[tuple[Entry, Exception]] = []

        def write(group: Sequence[Entry]) -> None:
            # One transaction per call, retried whole on contention; an error that is not an
            # outage splits the group (bisect_load), so an unexpected one fails its rows alone.
            refused.extend(retrying(lambda: self.writer.write(collection, coll_json, group)))

        crashed = bisect_load(entries, write, retried=True)
        failed_ids: set[int] = set()
        for entry in entries:
            if entry.error is not None:
                outcome.fail(entry.doc, entry.error)
                failed_ids.add(id(entry))
        for entry, error in refused:
            outcome.fail(
                entry.doc,
                f"item {_label(entry.doc.body['id'])} rejected by pgstac: {error_text(error)}",
                is_permanent(error),
            )
            failed_ids.add(id(entry))
        for entry, error in crashed:
            outcome.fail(
                entry.doc,
                f"item {_label(entry.doc.body['id'])} could not be loaded "
                f"({type(error).__name__}: {error_text(error)})",
                is_permanent(error),
            )
            failed_ids.add(id(entry))
        superseded = sum(1 for e in entries if e.superseded and id(e) not in failed_ids)
        outcome.superseded += superseded
        outcome.items_loaded += len(entries) - len(failed_ids) - superseded

    # -- deletes -----------------------------------------------------------------------------

    def delete_items(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Apply Delete messages, oldest first; ids pgstac does not hold are logged, not failed.

        Each id is deleted only when the delete is not older than the message its item came
        from, and leaves its send time behind, so an older copy of the item delivered later
        (a redrive, a slow ItemGen) does not bring it back.
        """

        def sent(doc: Document) -> float:
            return math.inf if doc.sent_at is None else doc.sent_at

        touched: dict[str, set[str]] = defaultdict(set)
        known, _ = self._existing_collections({d.body["collection"] for d in docs})
        for doc in sorted(docs, key=sent):
            collection = doc.body["collection"]
            ids = list(dict.fromkeys(doc.body["ids"]))
            try:
                deleted, partitions = retrying(
                    partial(self.writer.delete, collection, ids, doc.sent_at)
                )
            except Exception as e:
                if fails_batch(e):
                    raise
                outcome.fail(
                    doc,
                    f"delete of {len(ids)} items of collection {_label(collection)} failed "
                    f"({type(e).__name__}: {error_text(e)})",
                    is_permanent(e),
                )
                continue
            outcome.items_deleted += len(deleted)
            touched[collection] |= partitions
            if self.record_ledger and doc.request_id is not None:
                with self.conn.transaction():
                    ledger.record(self.conn, [ledger.for_document(doc, LOADED, collection)])
            missing = [i for i in ids if i not in deleted]
            logger.log(
                logging.INFO if collection in known else logging.WARNING,
                "deleted items" if collection in known else "delete for an unknown collection",
                extra={
                    "message_id": doc.message_id,
                    "collection": collection,
                    "deleted": len(deleted),
                    # ids not there, or kept because a newer message loaded them
                    "not_deleted": len(missing),
                    "not_deleted_ids": missing[:100],
                },
            )
        for collection, partitions in touched.items():  # once each, after every delete
            self.writer.refresh_now(collection, partitions)

    # -- the ledger --------------------------------------------------------------------------

    def record_reports(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Record ItemGen's status reports in the ledger (nothing of them goes to pgstac).

        With the ledger off they succeed without effect, so turning it off drains them.
        """
        if not self.record_ledger:
            return
        entries = [
            ledger.LedgerEntry(
                d.body["request_id"],
                d.body["state"],
                d.body.get("stage") or "item-gen",
                d.body.get("collection"),
                generated=d.body.get("generated"),
                error=d.body.get("error"),
                attempts=d.body.get("attempts") or 0,
                submission_id=d.body.get("submission_id") or d.submission_id,
            )
            for d in docs
        ]

        def write(group: Sequence[ledger.LedgerEntry]) -> None:
            with self.conn.transaction():
                ledger.record(self.conn, group)

        refused = bisect_load(entries, lambda group: retrying(lambda: write(group)), retried=True)
        failed = {id(entry) for entry, _ in refused}
        reasons = {id(entry): error for entry, error in refused}
        for doc, entry in zip(docs, entries, strict=True):
            if id(entry) in failed:
                error = reasons[id(entry)]
                outcome.fail(
                    doc,
                    f"status report for request {_label(entry.request_id)} refused by the "
                    f"ledger: {error_text(error)}",
                    is_permanent(error),
                )

    # -- the batch ---------------------------------------------------------------------------

    def load(self, docs: Sequence[Document]) -> LoadOutcome:
        """Load collections, then items; connection trouble raises DatabaseUnavailable.

        The documents are the load's to consume: an item's body is cut down to its type, id
        and collection once its row is staged (``Document.release_body``).
        """
        outcome = LoadOutcome()
        self.writer.changes = []  # what earlier, interrupted loads left is theirs to report
        reports = [d for d in docs if is_status_report(d.body)]
        collections = [d for d in docs if is_collection(d.body)]
        deletes = [d for d in docs if d.body.get("type") == "Delete"]
        items = [
            d
            for d in docs
            if not is_collection(d.body)
            and d.body.get("type") != "Delete"
            and not is_status_report(d.body)
        ]
        with paused_gc(), translate_errors("loading"):
            try:
                if reports:
                    self.record_reports(reports, outcome)
                if collections:
                    self.load_collections(collections, outcome)
                if items:
                    self.load_items(items, outcome)
                if deletes:  # after the items: each id's newest message wins either way
                    self.delete_items(deletes, outcome)
                self.writer.refresh_stale()  # partitions whose refresh earlier batches skipped
            except Exception as e:
                if fails_batch(e):
                    raise
                # A bug of ours, not an outage: the undecided messages are retried by SQS
                # rather than failing the invocation (and every message with it).
                logger.exception("unexpected error loading a batch")
                for doc in docs:
                    outcome.fail(
                        doc, f"unexpected error ({type(e).__name__}: {error_text(e)})", False
                    )
        outcome.changes, self.writer.changes = self.writer.changes, []
        return outcome


def load_documents(
    conn: psycopg.Connection,
    docs: Sequence[Document],
    create_collections_if_missing: bool = False,
    stats_interval: float = 60.0,
) -> LoadOutcome:
    """Load documents through ``conn``; see BatchLoader.load."""
    return BatchLoader(conn, create_collections_if_missing, stats_interval).load(docs)
