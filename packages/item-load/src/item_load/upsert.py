"""Upsert one collection's items into its pgstac partitions: one COPY, one INSERT per partition.

pypgstac's ``Loader.load_partition`` does the same per partition, but creates a temporary table,
COPYs and queues a stats refresh for every partition of every call: about 7 ms per partition
per batch here, which for a 1000-item batch spread over 12 monthly partitions was more than
the COPY itself. This module keeps one temporary table per session, COPYs a batch's rows into
it once, in a stream (PostgreSQL parses row n while Python makes row n+1), and then runs
pypgstac's own upsert statement once per partition from it (plus ``private``, which pypgstac's
leaves unchanged on conflict). A partition whose INSERT fails is bisected by row ranges of the
staged table, so finding a bad row re-sends nothing.

COPYing straight into the partition when no id exists yet was measured slower here (about 20%
per clean batch) than staging plus one INSERT.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from pypgstac.load import Loader

from ingest_common.ledger import SUPERSEDED
from item_load import ledger
from item_load.db import fails_batch, is_outage, is_retryable
from item_load.messages import Document
from item_load.notify import CREATED, UPDATED, Change
from item_load.rows import CollectionJson, format_row
from item_load.validation import Span

T = TypeVar("T")

logger = logging.getLogger(__name__)

# (seq, sent, request_id, attempts, submission_id, <the items columns>): seq numbers the batch's
# rows, sent is the message's send time (epoch seconds) for the newest-wins check; the middle
# three are the ledger's, so recording a batch's requests as loaded reads them server-side.
STAGING_TABLE = "stactools_ingest_staging"

_COLUMNS = ("id", "collection", "datetime", "end_datetime", "geometry", "content", "private")

# A delete's send time for each of ``ids`` it is not older than: the item is deleted, or is
# not loaded yet, and an older copy delivered later must not bring it back.
_TOMBSTONES = """
    INSERT INTO stactools_ingest.applied AS a (collection, id, sent_at)
    SELECT %(collection)s, id, coalesce(to_timestamp(%(sent)s), now())
    FROM unnest(%(ids)s::text[]) AS w(id)
    ON CONFLICT (collection, id) DO UPDATE SET sent_at = EXCLUDED.sent_at
    WHERE a.sent_at < EXCLUDED.sent_at
"""
# Deletes from ``target`` (a partition, or ``items``) the ``ids`` no newer message has loaded.
_DELETE = sql.SQL(
    """
    DELETE FROM {target} AS i USING stactools_ingest.applied a
    WHERE i.collection = %(collection)s AND i.id = ANY(%(ids)s::text[])
        AND a.collection = i.collection AND a.id = i.id
        AND a.sent_at <= coalesce(to_timestamp(%(sent)s), now())
    RETURNING i.id, (SELECT relname FROM pg_class WHERE oid = i.tableoid)
    """
)

# When each partition's stats were last refreshed by this process: (host, port, db, partition).
_stats_refreshed: dict[tuple[Any, ...], float] = {}


@dataclass(slots=True)
class Entry:
    """An item on its way into one partition; ``seq`` is its row number in the staging table."""

    doc: Document
    span: Span
    partition: str
    seq: int = 0
    row: tuple[Any, ...] | None = None  # once made; the document's body is released then
    error: str | None = None
    superseded: bool = False  # pgstac holds content from a newer message: nothing to do


def _holds(bounds: tuple[Any, ...], low: datetime, high: datetime) -> bool:
    """Whether (empty, lower, upper) constraint bounds hold [low, high].

    None is an infinite bound: the constraint is missing (dropped, or never made), which
    pgstac repairs in the stats refresh a load forces when the bounds do not hold.
    """
    empty, lower, upper = bounds
    return not empty and lower is not None and upper is not None and lower <= low and high <= upper


@dataclass(slots=True)
class Bounds:
    """The datetime and end_datetime ranges of a partition's rows in this batch."""

    lower: datetime
    upper: datetime
    end_lower: datetime
    end_upper: datetime

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> Bounds:
        starts = [e.span.lower for e in entries]
        ends = [e.span.upper for e in entries]
        return cls(min(starts), max(starts), min(ends), max(ends))

    def within(self, constraints: tuple[Any, ...] | None) -> bool:
        """Whether a partition's constraint ranges (see ``_constraints``) already hold these."""
        return (
            constraints is not None
            and _holds(constraints[0:3], self.lower, self.upper)
            and _holds(constraints[3:6], self.end_lower, self.end_upper)
        )


def error_text(error: Exception) -> str:
    """PostgreSQL's own message (and detail) for a database error; the first line otherwise."""
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        detail = error.diag.message_detail
        return error.diag.message_primary + (f" ({detail})" if detail else "")
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def bisect_load(
    rows: Sequence[T], load: Callable[[Sequence[T]], None], retried: bool = False
) -> list[tuple[T, Exception]]:
    """Load rows; when the group fails, split it until the bad rows stand alone.

    A group with k bad rows out of n costs about 2·k·log2(n) extra loads instead of n, and every
    good row still lands. Outages are not the rows' fault and propagate; so does contention
    (deadlock, serialization, lock timeout, check violation), which only re-running the whole
    transaction resolves, unless ``load`` already did that (``retried``): a check violation
    that outlasted the retries is then a row's own, and is split out like any other.
    """
    try:
        load(rows)
        return []
    except Exception as e:
        if fails_batch(e) or (is_retryable(e) and not retried):
            raise
        if len(rows) == 1:
            return [(rows[0], e)]
    mid = len(rows) // 2
    return bisect_load(rows[:mid], load, retried) + bisect_load(rows[mid:], load, retried)


def lock_collection(
    conn: psycopg.Connection, collection: str, toast_compression: str | None = None
) -> None:
    """Take a collection's loader lock for the current transaction, and run it in UTC.

    UTC whatever connection we were given: pgstac names the partitions check_partition makes
    with to_char() in the session's time zone. ``toast_compression`` (a method the server
    supports) is how the transaction's rows are compressed; None leaves the setting alone,
    which PostgreSQL 13 does not have.
    """
    lock = (
        "SELECT pg_advisory_xact_lock(hashtext('stactools-ingest:' || %s)), "
        "set_config('TimeZone', 'UTC', true)"
    )
    if toast_compression is None:
        conn.execute(lock, (collection,))
    else:
        conn.execute(
            lock + ", set_config('default_toast_compression', %s, true)",
            (collection, toast_compression),
        )


def supported_toast_compression(conn: psycopg.Connection, method: str) -> bool:
    """Whether the server was built with ``method`` (lz4 needs ``--with-lz4``; PostgreSQL 14+)."""
    row = conn.execute(
        "SELECT %s = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
        (method,),
    ).fetchone()
    return bool(row and row[0])


def groups_of(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    """Entries (sorted by partition) grouped by partition."""
    return [(name, list(g)) for name, g in itertools.groupby(entries, key=lambda e: e.partition)]


def refresh_partition(conn: psycopg.Connection, collection: str, partition: str) -> bool:
    """pgstac's stats refresh of one partition, in a short transaction of its own.

    Under the collection's lock: it rewrites the constraints other loaders of the collection
    rely on. Clears the partition's stale mark. The rows are committed already, so a failure is
    logged and the mark left for a later try, unless it is an outage.
    """
    try:
        with conn.transaction():
            lock_collection(conn, collection)
            conn.execute("SELECT update_partition_stats_q(%s)", (partition,))
            conn.execute(
                "DELETE FROM stactools_ingest.stale_partitions WHERE partition = %s", (partition,)
            )
    except psycopg.Error as e:
        if is_outage(e):
            raise
        logger.warning(
            "partition stats refresh failed; it is retried later",
            extra={"partition": partition, "reason": error_text(e)},
        )
        return False
    return True


def refresh_stale_partitions(conn: psycopg.Connection, older_than: float) -> list[str]:
    """Refresh every partition whose skipped stats refresh is ``older_than`` seconds old.

    Run after each batch, and fit for a scheduled maintenance call when no batch comes.
    Returns the partitions refreshed.
    """
    rows = conn.execute(
        "SELECT partition, collection FROM stactools_ingest.stale_partitions "
        "WHERE since <= now() - make_interval(secs => %s) ORDER BY since",
        (older_than,),
    ).fetchall()
    return [p for p, c in rows if refresh_partition(conn, c, p)]


def _changes(
    collection: str, staged: Sequence[Entry], changed: dict[str, bool]
) -> Iterator[Change]:
    """The post-ingest notifications of a committed write, in the batch's order."""
    for e in staged:
        created = changed.get(e.doc.body["id"])
        if created is not None:
            yield Change(
                CREATED if created else UPDATED,
                collection,
                e.doc.body["id"],
                e.doc.request_id,
                e.span.lower.isoformat().replace("+00:00", "Z"),
            )


def _superseded_entries(
    collection: str, superseded: Sequence[Entry]
) -> Iterator[ledger.LedgerEntry]:
    """The ledger's word on items older than pgstac's: their requests changed nothing."""
    for e in superseded:
        if e.doc.request_id is not None:
            yield ledger.for_document(e.doc, SUPERSEDED, collection)


class CollectionWriter:
    """Writes batches of one collection's items through one connection."""

    def __init__(
        self,
        conn: psycopg.Connection,
        loader: Loader,
        stats_interval: float,
        toast_compression: str = "lz4",
    ) -> None:
        self.conn = conn
        self.loader = loader
        self.stats_interval = stats_interval
        self.toast_compression = toast_compression
        self.ledger = True  # record each request's items as loaded, with the rows
        self.notify = False  # collect what each write created or changed (``changes``)
        self.changes: list[Change] = []
        """Items committed writes created or changed, for post-ingest notifications."""
        self._supported: dict[str, bool] = {}

    def write(
        self, collection: str, coll_json: CollectionJson, entries: Sequence[Entry]
    ) -> list[tuple[Entry, Exception]]:
        """Upsert ``entries``, their rows in one transaction; returns the rows PostgreSQL refused,
        and why.

        Entries whose row cannot be made get their ``error`` set and are left out; entries
        older than what pgstac holds get ``superseded`` set and are left out too. pgstac's
        partition maintenance (check_partition) deadlocks when two sessions create or widen the
        same collection's partitions at once; a transaction-scoped advisory lock per collection
        makes concurrent loaders of one collection take turns, while loaders of different
        collections still run in parallel. The same lock makes the newest-wins check and the
        ``stactools_ingest.applied`` write that follows it atomic against other loaders.

        Three transactions, so that readers never wait on the row work: partitions are created
        or widened first (check_partition refreshes materialized views that ``search()`` reads,
        holding them exclusively until commit), then the rows are written, then the partition
        stats are refreshed. Constraints wider than the rows they hold are harmless, and a
        refresh that fails leaves the rows loaded.
        """
        entries = sorted(entries, key=lambda e: e.partition)
        widened, ready = self._prepare_partitions(collection, entries)
        due: list[tuple[str, bool]] = []
        changed: dict[str, bool] = {}  # id -> created, of the rows this write changed
        with self.conn.transaction():
            self._lock(collection, self._toast_method())
            for seq, entry in enumerate(entries):
                entry.seq = seq
            self._prepare_staging_table()
            failed = bisect_load(entries, lambda group: self._stage(coll_json, group))
            refused = {id(entry) for entry, _ in failed}
            staged = [e for e in entries if e.error is None and id(e) not in refused]
            self._drop_superseded(collection, entries)
            staged = [e for e in staged if not e.superseded]
            for name, group in groups_of(staged):
                # Not ready only when check_partition refused the whole group: then it runs
                # here, per sub-group, and bisection isolates the rows it refuses. (Should
                # another loader's stats refresh narrow the constraints since, the upsert
                # raises a check violation and the whole write is retried.)
                covered = name in ready
                bad = self._upsert_partition(
                    collection, name, group, Bounds.of(group), covered, changed
                )
                failed += bad
                if len(bad) < len(group):
                    due.append((name, name in widened or not covered))
            refused = {id(entry) for entry, _ in failed}
            landed = [e for e in staged if id(e) not in refused]
            if coll_json[2] is not None:  # partitioned by time: an item may have moved
                for moved in self._delete_moved(collection, landed):
                    if moved in changed:
                        changed[moved] = False  # a new row in its new partition: an update
            self._record_applied(collection, [e for e in staged if id(e) in refused])
            if self.ledger:
                refused_seqs = [e.seq for e in staged if id(e) in refused]
                ledger.record_staged(self.conn, STAGING_TABLE, collection, refused_seqs)
                superseded = [e for e in entries if e.superseded and e.error is None]
                ledger.record(self.conn, _superseded_entries(collection, superseded))
            refresh = [name for name, force in due if force or self._due(name)]
            self._mark_stale(collection, [name for name, _ in due if name not in refresh])
        if changed:  # committed: these are changes now
            self.changes.extend(_changes(collection, staged, changed))
        for name in refresh:
            self._refresh_stats(collection, name)
        return failed

    def _lock(self, collection: str, toast_compression: str | None = None) -> None:
        """Take the collection's loader lock for this transaction, and run it in UTC."""
        lock_collection(self.conn, collection, toast_compression)

    def _toast_method(self) -> str | None:
        """The compression to write rows with (``toast_compression``), if the server has it.

        pglz, PostgreSQL's default, takes more of the server's time in a COPY of realistic
        items than parsing them; lz4 takes a fraction of that and reads back faster too. Asked
        once per connection; a server without it keeps its default, said once.
        """
        wanted = self.toast_compression
        if wanted == "server":
            return None
        if wanted not in self._supported:
            self._supported[wanted] = supported_toast_compression(self.conn, wanted)
            if not self._supported[wanted]:
                logger.warning(
                    "the database server does not support this TOAST compression; rows are "
                    "stored with its default_toast_compression",
                    extra={"toast_compression": wanted},
                )
        return wanted if self._supported[wanted] else None

    def _prepare_partitions(
        self, collection: str, entries: Sequence[Entry]
    ) -> tuple[set[str], set[str]]:
        """Create or widen the partitions ``entries`` need, committed before any row work.

        Returns the partitions check_partition ran for (their stats are then refreshed at once)
        and those whose constraints now hold their rows. A group check_partition refuses is left
        to the row transaction, which bisects it.
        """
        groups = {name: Bounds.of(group) for name, group in groups_of(entries)}
        widened: set[str] = set()
        ready: set[str] = set()
        with self.conn.transaction():
            self._lock(collection)
            constraints = self._constraints(collection)
            for name, bounds in groups.items():
                if bounds.within(constraints.get(name)):
                    ready.add(name)
                    continue
                try:
                    with self.conn.transaction():
                        self._check_partition(collection, bounds)
                    widened.add(name)
                    ready.add(name)
                except psycopg.Error as e:
                    if is_outage(e) or is_retryable(e):
                        raise
        return widened, ready

    # -- deletes -----------------------------------------------------------------------------

    def delete(
        self, collection: str, ids: Sequence[str], sent_at: float | None
    ) -> tuple[set[str], set[str]]:
        """Delete ``ids`` of ``collection``, one transaction per partition; the ids deleted,
        and the partitions they were deleted from.

        First the delete's send time is recorded for every id (``stactools_ingest.applied``),
        present or not, unless a newer message loaded it: an older copy of the item delivered
        later is then superseded, as by a newer item, and an id PostgreSQL refuses fails the
        message before anything is deleted. Then each partition holding some of the ids deletes
        those no newer message has loaded since; a last pass over the whole collection catches
        ids loaded after the partitions were looked up. Each partition that lost rows is marked
        stale in the same transaction: ``refresh_now`` (once per partition for a whole batch of
        deletes), or a later maintenance call if that cannot run, refreshes its stats.
        """
        params = {"collection": collection, "ids": list(ids), "sent": sent_at}
        with self.conn.transaction():
            self._lock(collection)
            self.conn.execute(_TOMBSTONES, params)
        with self.conn.transaction():  # a savepoint in a caller's transaction (run's workers)
            holders = self.conn.execute(
                """
                SELECT c.relname, array_agg(i.id) FROM items i
                JOIN pg_class c ON c.oid = i.tableoid
                WHERE i.collection = %s AND i.id = ANY(%s) GROUP BY c.relname
                """,
                (collection, list(ids)),
            ).fetchall()
        deleted: set[str] = set()
        touched: set[str] = set()
        for partition, held in [*holders, (None, list(ids))]:
            target = sql.Identifier("items" if partition is None else partition)
            with self.conn.transaction():
                self._lock(collection)
                rows = self.conn.execute(
                    _DELETE.format(target=target), {**params, "ids": held}
                ).fetchall()
                self._mark_stale(collection, sorted({name for _, name in rows}))
            deleted.update(item_id for item_id, _ in rows)
            touched.update(name for _, name in rows)
        return deleted, touched

    def refresh_now(self, collection: str, partitions: Iterable[str]) -> None:
        """Refresh these partitions' stats (clearing their stale marks); one that cannot be
        refreshed now keeps its mark for a later batch or the maintenance call."""
        for partition in sorted(set(partitions)):
            self._refresh_stats(collection, partition)

    # -- newest wins -------------------------------------------------------------------------

    def _drop_superseded(self, collection: str, entries: Sequence[Entry]) -> None:
        """Take out of the staged rows those older than the message pgstac's content came from,
        and set their entries' ``superseded``; ``entries`` are indexed by ``seq``.

        One statement, against the staged rows. Equal send times are not older (the later
        delivery wins, so a redelivered message still applies); no send time counts as now.
        ``applied`` is probed once per staged row (a subquery on its key): as a join, the
        planner (its statistics on ``applied`` dating from when that was nearly empty) hashed
        every row the collection has there, batch after batch, so each load of a growing
        collection cost more than the one before.
        """
        rows = self.conn.execute(
            sql.SQL(
                """
                DELETE FROM {staging} s
                WHERE (SELECT a.sent_at FROM stactools_ingest.applied a
                       WHERE a.collection = %s AND a.id = s.id)
                    > coalesce(to_timestamp(s.sent), now())
                RETURNING s.seq
                """
            ).format(staging=sql.Identifier(STAGING_TABLE)),
            (collection,),
        ).fetchall()
        for entry in entries:
            entry.superseded = False
        for (seq,) in rows:
            entries[seq].superseded = True

    def _record_applied(self, collection: str, refused: Sequence[Entry]) -> None:
        """Remember the send time of each row just loaded (the staged rows but those refused),
        in the rows' own transaction."""
        self.conn.execute(
            sql.SQL(
                """
                INSERT INTO stactools_ingest.applied AS a (collection, id, sent_at)
                SELECT %s, s.id, coalesce(to_timestamp(s.sent), now())
                FROM {staging} s WHERE s.seq <> ALL(%s::integer[])
                ON CONFLICT (collection, id) DO UPDATE SET sent_at = EXCLUDED.sent_at
                WHERE a.sent_at < EXCLUDED.sent_at
                """
            ).format(staging=sql.Identifier(STAGING_TABLE)),
            (collection, [e.seq for e in refused]),
        )

    # -- staging -----------------------------------------------------------------------------

    def _prepare_staging_table(self) -> None:
        """The session's staging table, created by the first batch and emptied at each commit.

        Checked inside every transaction rather than once per connection, so a pooler in
        transaction mode (RDS Proxy, PgBouncer) that hands us another backend still finds it.
        Emptied here too, in case a caller's own transaction holds rows of an earlier collection.
        """
        self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (seq integer, "
            "sent double precision, request_id text, attempts integer, submission_id text, "
            "LIKE items) ON COMMIT DELETE ROWS"
        )
        self.conn.execute(f"DELETE FROM {STAGING_TABLE}")

    def _rows(self, coll_json: CollectionJson, entries: Sequence[Entry]) -> Iterator[tuple]:
        """COPY rows, made on first use; a row that cannot be made becomes the entry's error."""
        for entry in entries:
            if entry.row is None and entry.error is None:
                try:
                    doc = entry.doc
                    row = format_row(self.loader, doc.body, coll_json, entry.span, doc.geometry)
                    if "\\u0000" in row["content"]:
                        # Valid JSON, but PostgreSQL's jsonb refuses NUL; catching it here saves
                        # bisecting a whole COPY for it.
                        raise ValueError("a string contains a NUL character (\\u0000)")
                except Exception as e:
                    entry.error = (
                        f"item {entry.doc.body['id']} cannot be converted for pgstac "
                        f"({type(e).__name__}: {error_text(e)}); check its geometry and "
                        "properties"
                    )
                    continue
                entry.row = tuple(row[c] for c in _COLUMNS)
                entry.doc.release_body()
            if entry.row is not None:
                doc = entry.doc
                yield (
                    entry.seq,
                    doc.sent_at,
                    doc.request_id,
                    doc.attempts,
                    doc.submission_id,
                    *entry.row,
                )

    def _stage(self, coll_json: CollectionJson, entries: Sequence[Entry]) -> None:
        """COPY entries into the staging table; a failed COPY leaves nothing behind."""
        columns = ", ".join(("seq", "sent", "request_id", "attempts", "submission_id", *_COLUMNS))
        with (
            self.conn.transaction(),
            self.conn.cursor() as cur,
            cur.copy(f"COPY {STAGING_TABLE} ({columns}) FROM STDIN") as copy,
        ):
            for row in self._rows(coll_json, entries):
                copy.write_row(row)

    # -- partitions --------------------------------------------------------------------------

    def _constraints(self, collection: str) -> dict[str, tuple[Any, ...]]:
        """Each partition's constraint ranges: (empty, lower, upper) for datetime, then end.

        pypgstac's ``_partition_update`` compares datetimes as strings, and the database's
        ``+00:00`` never equals an item's ``Z``, so it re-runs check_partition for every chunk.
        Comparing parsed datetimes against these ranges runs it only when a batch really
        reaches outside a partition's bounds.
        """
        rows = self.conn.execute(
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
        return {row[0]: row[1:] for row in rows}

    def _check_partition(self, collection: str, bounds: Bounds) -> None:
        """pgstac creates the partition or widens its constraints to hold ``bounds``."""
        self.conn.execute(
            "SELECT check_partition(%s, tstzrange(%s, %s, '[]'), tstzrange(%s, %s, '[]'))",
            (collection, bounds.lower, bounds.upper, bounds.end_lower, bounds.end_upper),
        )

    def _upsert_partition(
        self,
        collection: str,
        name: str,
        group: list[Entry],
        bounds: Bounds,
        covered: bool,
        changed: dict[str, bool],
    ) -> list[tuple[Entry, Exception]]:
        """pypgstac's upsert from the staging table; on failure, bisect by staged row ranges.

        check_partition runs once for the whole group, in its own savepoint, so bisection does
        not repeat it (it refreshes two materialized views). Only when it fails does each
        sub-group widen bounds of its own.
        """
        widened = covered
        if not covered:
            try:
                with self.conn.transaction():
                    self._check_partition(collection, bounds)
                widened = True
            except psycopg.Error as e:
                if is_outage(e) or is_retryable(e):
                    raise
        upsert = sql.SQL(
            """
            INSERT INTO {partition} AS t ({columns})
            SELECT {columns} FROM {staging} WHERE seq BETWEEN %s AND %s
            ON CONFLICT (id) DO UPDATE SET
                datetime = EXCLUDED.datetime,
                end_datetime = EXCLUDED.end_datetime,
                geometry = EXCLUDED.geometry,
                collection = EXCLUDED.collection,
                content = EXCLUDED.content,
                private = EXCLUDED.private
            WHERE t IS DISTINCT FROM EXCLUDED
            {returning}
            """
        ).format(
            # xmax is 0 in a row version an INSERT made, and set in one an UPDATE made
            returning=sql.SQL("RETURNING id, xmax = 0" if self.notify else ""),
            partition=sql.Identifier(name),
            columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            staging=sql.Identifier(STAGING_TABLE),
        )
        lock = sql.SQL("LOCK TABLE ONLY {} IN EXCLUSIVE MODE").format(sql.Identifier(name))

        def load(rows: Sequence[Entry]) -> None:
            with self.conn.transaction():
                if not widened:
                    self._check_partition(collection, Bounds.of(rows))
                self.conn.execute(lock)
                cur = self.conn.execute(upsert, (rows[0].seq, rows[-1].seq))
                if self.notify:
                    # a later failure of this savepoint's transaction discards them with it
                    changed.update(cur.fetchall())

        return bisect_load(group, load)

    def _stats_key(self, partition: str) -> tuple[Any, ...]:
        info = self.conn.info
        return (info.host, info.port, info.dbname, partition)

    def _due(self, partition: str) -> bool:
        """Whether this process last refreshed ``partition`` at least ``stats_interval`` ago.

        The refresh scans the partition and refreshes two materialized views: the largest
        fixed cost of a load. Rows inside a partition's existing bounds change only its extent,
        so that refresh runs at most every ``stats_interval`` seconds per partition; a batch
        that widened the bounds (or found its constraint missing) refreshes at once, which also
        sets the constraints to the rows' range. A skipped refresh is recorded in
        ``stactools_ingest.stale_partitions`` with the rows, and run later by any batch or a
        maintenance call (``refresh_stale_partitions``).
        """
        last = _stats_refreshed.get(self._stats_key(partition), float("-inf"))
        return time.monotonic() - last >= self.stats_interval

    def _mark_stale(self, collection: str, partitions: Sequence[str]) -> None:
        """Record partitions whose refresh was skipped; the first skip's time is kept."""
        if partitions:
            self.conn.execute(
                "INSERT INTO stactools_ingest.stale_partitions (partition, collection) "
                "SELECT unnest(%s::text[]), %s ON CONFLICT (partition) DO NOTHING",
                (list(partitions), collection),
            )

    def _refresh_stats(self, collection: str, partition: str) -> None:
        """Refresh one partition's stats after the rows committed; stamped once it committed."""
        started = time.monotonic()
        if refresh_partition(self.conn, collection, partition):
            _stats_refreshed[self._stats_key(partition)] = started

    def refresh_stale(self) -> list[str]:
        """Refresh the partitions whose skipped refresh is ``stats_interval`` old (any
        collection): a partition no batch touches again still gets its stats."""
        refreshed = refresh_stale_partitions(self.conn, self.stats_interval)
        for partition in refreshed:
            _stats_refreshed[self._stats_key(partition)] = time.monotonic()
        return refreshed

    def _delete_moved(self, collection: str, loaded: Sequence[Entry]) -> list[str]:
        """Remove older copies of items whose datetime moved them to another partition.

        Upsert replaces an item within its partition; a copy in another partition is only found
        by id, and differs in datetime from the row just loaded.
        """
        if not loaded:
            return []
        rows = self.conn.execute(
            """
            DELETE FROM items i USING unnest(%s::text[], %s::timestamptz[]) AS n(id, dt)
            WHERE i.collection = %s AND i.id = n.id AND i.datetime <> n.dt
            RETURNING i.id
            """,
            ([e.doc.body["id"] for e in loaded], [e.span.lower for e in loaded], collection),
        ).fetchall()
        return [r[0] for r in rows]
