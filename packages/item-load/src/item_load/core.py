"""Load a batch of STAC documents into pgstac: validate, deduplicate, COPY, isolate what fails.

The stage core: it takes plain documents and a connection and returns which messages failed and
why, so the Lambda handler, the local worker and the benchmarks all run exactly this code.
"""

from __future__ import annotations

import gc
import itertools
import logging
import random
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods, Partition
from tenacity import stop_after_attempt

from item_load.db import is_transient, translate_errors
from item_load.errors import InvalidItem
from item_load.messages import Document
from item_load.rows import CollectionJson, format_row, partition_name
from item_load.validation import Span, check_item

logger = logging.getLogger(__name__)

T = TypeVar("T")

# pypgstac retries CheckViolation and deadlocks up to five times with waits of up to two minutes.
# A bad item in a group would sit through all of that before we could isolate it, so we call the
# same COPY code once and do our own retrying: deadlocks per collection, bad rows by bisection.
_load_partition_once = Loader.load_partition.retry_with(stop=stop_after_attempt(1), reraise=True)

DEADLOCK_ATTEMPTS = 4

# Connections whose pgstac version pypgstac has accepted.
_version_checked: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()

# When each partition's stats were last refreshed by this process: (host, port, db, partition).
_stats_refreshed: dict[tuple[Any, ...], float] = {}


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


@dataclass(slots=True)
class _Entry:
    """An item on its way into one partition; its row is made while the COPY streams."""

    doc: Document
    span: Span
    partition: str
    row: dict[str, Any] | None = None
    error: str | None = None


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


def _error_text(error: Exception) -> str:
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        detail = error.diag.message_detail
        return error.diag.message_primary + (f" ({detail})" if detail else "")
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def bisect_load(rows: Sequence[T], load: Callable[[Sequence[T]], None]) -> list[tuple[T, str]]:
    """Load rows; when the group fails, split it until the bad rows stand alone.

    A group with k bad rows out of n costs about 2·k·log2(n) extra loads instead of n, and every
    good row still lands. Connection-level errors are not the rows' fault and propagate.
    """
    try:
        load(rows)
        return []
    except Exception as e:
        if is_transient(e):
            raise
        if len(rows) == 1:
            return [(rows[0], _error_text(e))]
    mid = len(rows) // 2
    return bisect_load(rows[:mid], load) + bisect_load(rows[mid:], load)


def _partition_of(partition: Partition, group: Sequence[_Entry]) -> Partition:
    """The partition bounds of just these rows, for bisection.

    The cached bounds include every row of the group, bad ones too; a sub-group that kept them
    would fail in check_partition for its good rows. check_partition merges with the bounds
    already in the database, so narrower bounds are safe.
    """
    return Partition(
        name=partition.name,
        collection=partition.collection,
        datetime_range_min=min(e.span.lower for e in group).isoformat(),
        datetime_range_max=max(e.span.lower for e in group).isoformat(),
        end_datetime_range_min=min(e.span.upper for e in group).isoformat(),
        end_datetime_range_max=max(e.span.upper for e in group).isoformat(),
        requires_update=True,
    )


def _covers(bounds: tuple[Any, ...], low: datetime, high: datetime) -> bool:
    """Whether (empty, lower, upper) constraint bounds, None meaning infinite, hold [low, high]."""
    empty, lower, upper = bounds
    return not empty and (lower is None or lower <= low) and (upper is None or high <= upper)


class BatchLoader:
    """Loads batches through one connection with pypgstac's Loader (COPY into partitions)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        create_collections_if_missing: bool = False,
        stats_interval: float = 60.0,
    ):
        self.conn = conn
        self.create_collections_if_missing = create_collections_if_missing
        self.stats_interval = stats_interval
        self.loader = Loader(PgstacDB(connection=conn))
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

    def _rows(self, collection: CollectionJson, entries: Sequence[_Entry]) -> Iterator[dict]:
        """The entries' rows for load_partition, made on first use so they stream into COPY.

        A row that cannot be made is kept as the entry's error and left out of the COPY; the
        rows already made are reused when bisection or a deadlock retry loads entries again.
        """
        for entry in entries:
            row = entry.row
            if row is None:
                if entry.error is not None:
                    continue
                try:
                    row = format_row(self.loader, entry.doc.body, collection)
                    if "\\u0000" in row["content"]:
                        # Valid JSON, but PostgreSQL's jsonb refuses NUL; catching it here saves
                        # bisecting a whole COPY group for it.
                        raise ValueError("a string contains a NUL character (\\u0000)")
                except Exception as e:
                    entry.error = (
                        f"item {entry.doc.body['id']} cannot be converted for pgstac "
                        f"({type(e).__name__}: {_error_text(e)}); check its geometry and "
                        "properties"
                    )
                    continue
                entry.row = row
            row["partition"] = entry.partition  # load_partition pops it from every row
            yield row

    def _load_collection_items(
        self, collection: str, docs: Sequence[tuple[Document, Span]], outcome: LoadOutcome
    ) -> None:
        coll_json = self.loader.collection_json(collection)
        _, key, partition_trunc = coll_json
        entries = [
            _Entry(doc, span, partition_name(key, partition_trunc, span.start))
            for doc, span in docs
        ]
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                failed = self._load_locked(collection, coll_json, entries)
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

    def _load_locked(
        self, collection: str, coll_json: CollectionJson, entries: list[_Entry]
    ) -> list[tuple[_Entry, str]]:
        """One transaction per collection, serialized across loaders by an advisory lock.

        pgstac's partition maintenance (check_partition) deadlocks when two sessions create or
        widen the same collection's partitions at once; holding a transaction-scoped lock per
        collection makes concurrent loaders of one collection take turns, while loaders of
        different collections still run in parallel.
        """
        self.loader._partition_cache = self._partitions(collection, entries)
        ordered = sorted(entries, key=lambda e: e.partition)
        failed: list[tuple[_Entry, str]] = []
        with self.conn.transaction():
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('stactools-ingest:' || %s))", (collection,)
            )
            for name, group in itertools.groupby(ordered, key=lambda e: e.partition):
                failed += self._load_group(name, coll_json, list(group))
            if coll_json[2] is not None:  # partitioned by time: an item may have moved
                self._delete_moved(collection, entries, failed)
        return failed

    def _partitions(self, collection: str, entries: Sequence[_Entry]) -> dict[str, Partition]:
        """The partitions these rows go to, and whether check_partition must widen them.

        pypgstac's ``_partition_update`` compares datetimes as strings, and the database's
        ``+00:00`` never equals an item's ``Z``, so it re-runs check_partition for every chunk.
        Comparing parsed datetimes against the constraint ranges (one query per collection)
        runs it only when a batch really reaches outside a partition's bounds.
        """
        existing = {
            row[0]: (row[1:4], row[4:7])
            for row in self.conn.execute(
                """
                SELECT partition,
                    isempty(constraint_dtrange),
                    nullif(lower(constraint_dtrange), '-infinity'),
                    nullif(upper(constraint_dtrange), 'infinity'),
                    isempty(constraint_edtrange),
                    nullif(lower(constraint_edtrange), '-infinity'),
                    nullif(upper(constraint_edtrange), 'infinity')
                FROM partitions_view WHERE collection = %s
                """,
                (collection,),
            ).fetchall()
        }
        spans: dict[str, list[datetime]] = {}
        for entry in entries:
            start, end = entry.span.lower, entry.span.upper
            span = spans.get(entry.partition)
            if span is None:
                spans[entry.partition] = [start, start, end, end]
            else:
                span[0], span[1] = min(span[0], start), max(span[1], start)
                span[2], span[3] = min(span[2], end), max(span[3], end)
        partitions = {}
        for name, (lo, hi, elo, ehi) in spans.items():
            bounds = existing.get(name)
            covered = (
                bounds is not None and _covers(bounds[0], lo, hi) and _covers(bounds[1], elo, ehi)
            )
            partitions[name] = Partition(
                name=name,
                collection=collection,
                datetime_range_min=lo.isoformat(),
                datetime_range_max=hi.isoformat(),
                end_datetime_range_min=elo.isoformat(),
                end_datetime_range_max=ehi.isoformat(),
                requires_update=not covered,
            )
        return partitions

    def _load_group(
        self, name: str, coll_json: CollectionJson, entries: list[_Entry]
    ) -> list[tuple[_Entry, str]]:
        """Load one partition's rows; when that fails, bisect to find the rows at fault.

        Every load_partition call ends with pgstac's update_partition_stats, which scans the
        partition and refreshes two materialized views: the largest fixed cost of a load. When
        the rows fall inside the partition's existing bounds (no check_partition needed), that
        refresh would record nothing new, so it is queued with pgstac's own ``use_queue``
        setting, for this transaction only, and run at most every
        ``partition_stats_interval`` seconds per partition. Bisection sub-loads never run it;
        the stats are brought up to date once afterwards. The queue is only used while no
        check_partition can run, so partition constraints and indexes are never deferred.
        """
        partition = self.loader._partition_cache[name]
        widening = partition.requires_update
        deferring = not widening and self._defer_partition_stats()
        failed_once = False

        def load(group: Sequence[_Entry]) -> None:
            nonlocal deferring, failed_once
            if len(group) == len(entries) and not failed_once:
                try:
                    self._copy(partition, coll_json, group)
                finally:
                    failed_once = True
                return
            if partition.requires_update:
                # check_partition itself failed: each sub-group widens bounds of its own.
                self._copy(_partition_of(partition, group), coll_json, group)
                return
            # The bounds already cover every row (check_partition committed to its savepoint
            # before the COPY failed), so sub-loads need neither it nor the stats refresh.
            deferring = deferring or self._defer_partition_stats()
            self._copy(partition, coll_json, group)

        try:
            return bisect_load(entries, load)
        finally:
            if deferring and not self.conn.broken:
                self._settle_partition_stats(name, force=widening)

    def _stats_key(self, partition: str) -> tuple[Any, ...]:
        info = self.conn.info
        return (info.host, info.port, info.dbname, partition)

    def _defer_partition_stats(self) -> bool:
        """Queue stats refreshes for now; False when pgstac is already in queue mode."""
        if self.conn.execute("SELECT get_setting_bool('use_queue')").fetchone()[0]:
            return False
        self.conn.execute("SELECT set_config('pgstac.use_queue', 'true', true)")
        return True

    def _settle_partition_stats(self, partition: str, force: bool) -> None:
        """Leave queue mode, drop our queued refreshes, and refresh now if it is due."""
        self.conn.execute("SELECT set_config('pgstac.use_queue', 'false', true)")
        self.conn.execute(
            "DELETE FROM query_queue WHERE query IN ("
            "format('SELECT update_partition_stats(%%L, %%L);', %s::text, false), "
            "format('SELECT update_partition_stats(%%L, %%L);', %s::text, true))",
            (partition, partition),
        )
        key = self._stats_key(partition)
        now = time.monotonic()
        if force or now - _stats_refreshed.get(key, float("-inf")) >= self.stats_interval:
            self.conn.execute("SELECT update_partition_stats_q(%s)", (partition,))
            _stats_refreshed[key] = now

    def _copy(
        self, partition: Partition, coll_json: CollectionJson, group: Sequence[_Entry]
    ) -> None:
        """COPY one partition's rows through pypgstac's load_partition (upsert mode).

        The rows are made as load_partition writes them, so PostgreSQL parses the COPY stream
        while Python makes the next rows. Plain insert mode, COPY straight into the partition,
        measured slower (1.05 s against 0.83 s for 20,000 items), as the partition's indexes
        are maintained row by row.
        """
        _load_partition_once(self.loader, partition, self._rows(coll_json, group), Methods.upsert)

    def _delete_moved(
        self,
        collection: str,
        entries: Sequence[_Entry],
        failed: Sequence[tuple[_Entry, str]],
    ) -> None:
        """Remove older copies of items whose datetime moved them to another partition.

        Upsert replaces an item within its partition; a copy in another partition is only found
        by id, and differs in datetime from the row just loaded.
        """
        bad = {id(entry) for entry, _ in failed}
        loaded = [
            (e.doc.body["id"], e.span.start)
            for e in entries
            if e.error is None and id(e) not in bad
        ]
        if not loaded:
            return
        ids, datetimes = zip(*loaded, strict=True)
        self.conn.execute(
            """
            DELETE FROM items i USING unnest(%s::text[], %s::timestamptz[]) AS n(id, dt)
            WHERE i.collection = %s AND i.id = n.id AND i.datetime <> n.dt
            """,
            (list(ids), list(datetimes), collection),
        )

    # -- the batch ---------------------------------------------------------------------------

    def load(self, docs: Sequence[Document]) -> LoadOutcome:
        """Load collections, then items; connection trouble raises DatabaseUnavailable."""
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
