"""Load a batch of STAC documents into pgstac: validate, deduplicate, COPY, isolate what fails.

The stage core: it takes plain documents and a connection and returns which messages failed and
why, so the Lambda handler, the local worker and the benchmarks all run exactly this code.
"""

from __future__ import annotations

import gc
import logging
import random
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from item_load.db import translate_errors
from item_load.errors import InvalidItem
from item_load.messages import Document
from item_load.rows import partition_name
from item_load.upsert import CollectionWriter, Entry, bisect_load
from item_load.validation import Span, check_item

logger = logging.getLogger(__name__)

DEADLOCK_ATTEMPTS = 4

# Connections whose pgstac version pypgstac has accepted.
_version_checked: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


@dataclass
class LoadOutcome:
    """What happened to a batch: failed message ids with their reasons, and counts."""

    failures: dict[str, str] = field(default_factory=dict)
    items_loaded: int = 0
    collections_loaded: int = 0

    def fail(self, doc: Document, reason: str) -> None:
        """Mark a document's message failed; the first reason per message is kept."""
        self.failures.setdefault(doc.message_id, reason)
        logger.warning(
            "rejected %s %s",
            doc.body.get("type"),
            doc.body.get("id"),
            extra={
                "message_id": doc.message_id,
                "collection": _collection_of(doc),
                "item_id": doc.body.get("id"),
                "reason": reason,
            },
        )


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch.

    A batch allocates hundreds of thousands of small, acyclic objects; every generation-2 pass
    walks all of them, which cost a third of the handler's time in benchmarks/load.py.
    Reference counting still frees everything; the collector runs again after the batch.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _collection_of(doc: Document) -> Any:
    return (
        doc.body.get("id") if doc.body.get("type") == "Collection" else doc.body.get("collection")
    )


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


def _newest(docs: Iterable[Document], key: Callable[[Document], Any]) -> list[Document]:
    """Keep one document per key: the newest by send time, later in the batch on a tie."""
    best: dict[Any, tuple[float, int, Document]] = {}
    for n, doc in enumerate(docs):
        k = key(doc)
        rank = (doc.sent_at if doc.sent_at is not None else float("-inf"), n)
        if k not in best or rank >= best[k][:2]:
            best[k] = (*rank, doc)
    return [entry[2] for entry in best.values()]


class BatchLoader:
    """Loads batches through one connection: collections with pypgstac's Loader, items with a
    CollectionWriter per collection."""

    def __init__(
        self,
        conn: psycopg.Connection,
        create_collections_if_missing: bool = False,
        stats_interval: float = 60.0,
    ):
        self.conn = conn
        self.create_collections_if_missing = create_collections_if_missing
        self.loader = Loader(PgstacDB(connection=conn))
        self.writer = CollectionWriter(conn, self.loader, stats_interval)
        if conn not in _version_checked:  # once per connection, not once per batch
            with translate_errors("checking the pgstac version"):
                self.loader.check_version()
            _version_checked.add(conn)

    # -- collections -------------------------------------------------------------------------

    def _upsert_collections(self, docs: Sequence[Document], mode: Methods) -> None:
        with self.conn.transaction():
            self.loader.load_collections(iter([d.body for d in docs]), mode)

    def load_collections(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Upsert collections first, so items of the same batch find them."""
        valid = []
        for doc in docs:
            if not isinstance(doc.body.get("id"), str) or not doc.body["id"]:
                outcome.fail(doc, "collection has no 'id' string")
            else:
                valid.append(doc)
        winners = _newest(valid, lambda d: d.body["id"])
        if not winners:
            return
        failed = bisect_load(winners, lambda rows: self._upsert_collections(rows, Methods.upsert))
        for doc, reason in failed:
            outcome.fail(doc, f"collection {doc.body['id']} rejected by pgstac: {reason}")
        outcome.collections_loaded += len(winners) - len(failed)

    def _existing_collections(self, ids: Iterable[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT id FROM collections WHERE id = ANY(%s)", (sorted(set(ids)),)
        ).fetchall()
        return {r[0] for r in rows}

    # -- items -------------------------------------------------------------------------------

    def load_items(self, docs: Sequence[Document], outcome: LoadOutcome) -> None:
        """Validate, deduplicate and load items, collection by collection."""
        spans: dict[int, Span] = {}
        for doc in docs:
            try:
                spans[id(doc)] = check_item(doc.body)
            except InvalidItem as e:
                outcome.fail(doc, str(e))
        candidates = [doc for doc in docs if id(doc) in spans]
        winners = _newest(candidates, lambda d: (d.body["collection"], d.body["id"]))

        by_collection: dict[str, list[tuple[Document, Span]]] = defaultdict(list)
        for doc in winners:
            by_collection[doc.body["collection"]].append((doc, spans[id(doc)]))

        existing = self._existing_collections(by_collection)
        missing = [c for c in by_collection if c not in existing]
        if missing and self.create_collections_if_missing:
            with self.conn.transaction():
                self.loader.load_collections(
                    iter([minimal_collection(c) for c in missing]), Methods.ignore
                )
            logger.info("created placeholder collections", extra={"collections": missing})
            missing = []
        for collection in missing:
            for doc, _ in by_collection.pop(collection):
                outcome.fail(
                    doc,
                    f"collection '{collection}' does not exist in pgstac (item "
                    f"{doc.body['id']}); load the collection first, or set "
                    "CREATE_COLLECTIONS_IF_MISSING=true",
                )
        Loader.collection_json.cache_clear()  # another loader may have changed base_item
        for collection, coll_docs in by_collection.items():
            self._load_collection_items(collection, coll_docs, outcome)

    def _load_collection_items(
        self, collection: str, docs: Sequence[tuple[Document, Span]], outcome: LoadOutcome
    ) -> None:
        coll_json = self.loader.collection_json(collection)
        _, key, partition_trunc = coll_json
        entries = [
            Entry(doc, span, partition_name(key, partition_trunc, span.start)) for doc, span in docs
        ]
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                failed = self.writer.write(collection, coll_json, entries)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * attempt)
        unconverted = [e for e in entries if e.error is not None]
        for entry in unconverted:
            outcome.fail(entry.doc, entry.error)
        for entry, reason in failed:
            outcome.fail(entry.doc, f"item {entry.doc.body['id']} rejected by pgstac: {reason}")
        outcome.items_loaded += len(entries) - len(unconverted) - len(failed)

    # -- the batch ---------------------------------------------------------------------------

    def load(self, docs: Sequence[Document]) -> LoadOutcome:
        """Load collections, then items; connection trouble raises DatabaseUnavailable.

        The documents are the load's to consume: an item's body is cut down to its type, id
        and collection once its row is staged (``Document.release_body``).
        """
        outcome = LoadOutcome()
        collections = [d for d in docs if d.body.get("type") == "Collection"]
        items = [d for d in docs if d.body.get("type") != "Collection"]
        with paused_gc(), translate_errors("loading"):
            if collections:
                self.load_collections(collections, outcome)
            if items:
                self.load_items(items, outcome)
        return outcome


def load_documents(
    conn: psycopg.Connection,
    docs: Sequence[Document],
    create_collections_if_missing: bool = False,
    stats_interval: float = 60.0,
) -> LoadOutcome:
    """Load documents through ``conn``; see BatchLoader.load."""
    return BatchLoader(conn, create_collections_if_missing, stats_interval).load(docs)
