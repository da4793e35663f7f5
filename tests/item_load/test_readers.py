"""The loader and its readers: no materialized-view lock held across the row work; partitions
whose constraint went missing are repaired."""

from __future__ import annotations

from factories import (
    MONTHLY,
    LambdaContext,
    collection,
    failed_ids,
    item,
    sns_envelope,
    sqs_record,
)

from item_load import handler as load_handler
from item_load.maintenance import MAINTENANCE_EVENT
from item_load.upsert import CollectionWriter

VIEWS = ("partitions", "partition_steps")


def _view_locks(db, pid: int) -> list[str]:
    """The materialized views search() reads that backend ``pid`` holds exclusively."""
    with db.connect() as conn:
        rows = conn.execute(
            """
            SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            WHERE l.pid = %s AND l.mode = 'AccessExclusiveLock' AND c.relname = ANY(%s)
            ORDER BY 1
            """,
            (pid, list(VIEWS)),
        ).fetchall()
    return [r[0] for r in rows]


def test_no_view_lock_is_held_across_the_copy_and_upserts(monthly, load, monkeypatch):
    # GIVEN a batch that creates and widens partitions (check_partition, stats refreshes)
    seen: dict[str, list[str]] = {}
    stage, record = CollectionWriter._stage, CollectionWriter._record_applied

    def watching_stage(self, coll_json, entries):
        seen.setdefault("copy", []).extend(_view_locks(monthly, self.conn.info.backend_pid))
        return stage(self, coll_json, entries)

    def watching_record(self, collection_id, landed):
        seen.setdefault("commit", []).extend(_view_locks(monthly, self.conn.info.backend_pid))
        return record(self, collection_id, landed)

    monkeypatch.setattr(CollectionWriter, "_stage", watching_stage)
    monkeypatch.setattr(CollectionWriter, "_record_applied", watching_record)
    records = [
        sqs_record(sns_envelope(item(f"i{n}", MONTHLY, f"2020-{1 + n % 3:02d}-15T00:00:00Z")))
        for n in range(9)
    ]
    # WHEN it is loaded
    assert failed_ids(load(records)) == set()
    # THEN neither the COPY nor the upserts ran while the views search() reads were locked
    assert seen == {"copy": [], "commit": []}
    assert monthly.count(MONTHLY) == 9
    # AND the partitions and their stats are there for search() afterwards
    with monthly.connect() as conn:
        found = conn.execute(
            'SELECT search(\'{"collections": ["monthly"], "limit": 20}\')->\'numberReturned\''
        ).fetchone()[0]
        stats = conn.execute(
            "SELECT count(*) FROM partition_stats s JOIN partitions_view v USING (partition) "
            "WHERE v.collection = %s AND s.dtrange IS NOT NULL",
            (MONTHLY,),
        ).fetchone()[0]
    assert (found, stats) == (9, 3)


def test_a_partition_whose_constraint_is_missing_is_repaired(pgstac, load):
    # GIVEN a loaded partition whose datetime constraint was dropped (as pypgstac's
    # test_load_items_nopartitionconstraint_succeeds does)
    assert failed_ids(load([sqs_record(sns_envelope(collection("c")))])) == set()
    first = [
        sqs_record(sns_envelope(item(f"a{n}", "c", f"2011-07-{31 - n}T00:00:00Z")))
        for n in range(3)
    ]
    assert failed_ids(load(first)) == set()
    with pgstac.connect() as conn:
        partition, lower = conn.execute(
            "SELECT partition, lower(constraint_dtrange)::text FROM partition_sys_meta "
            "WHERE collection = 'c'"
        ).fetchone()
        assert lower == "2011-07-29 00:00:00+00"
        conn.execute(f"ALTER TABLE {partition} DROP CONSTRAINT {partition}_dt")
        dropped = conn.execute(
            "SELECT lower(constraint_dtrange)::text FROM partition_sys_meta WHERE collection = 'c'"
        ).fetchone()[0]
        assert dropped == "-infinity"
    # WHEN the same items are loaded again (inside the stats interval)
    assert failed_ids(load(first)) == set()
    # THEN the constraint is back
    with pgstac.connect() as conn:
        lower = conn.execute(
            "SELECT lower(constraint_dtrange)::text FROM partition_sys_meta WHERE collection = 'c'"
        ).fetchone()[0]
    assert lower == "2011-07-29 00:00:00+00"


def _last_updated(db, collection_id: str):
    with db.connect() as conn:
        return conn.execute(
            "SELECT s.last_updated FROM partition_stats s "
            "JOIN partitions_view v USING (partition) WHERE v.collection = %s",
            (collection_id,),
        ).fetchone()[0]


def test_stats_skipped_inside_the_interval_are_refreshed_by_a_later_batch(pgstac, load):
    # GIVEN a collection whose second batch stays inside its partition's bounds, so its stats
    # refresh is skipped for the interval
    assert failed_ids(load([sqs_record(sns_envelope(collection("quiet")))])) == set()
    assert failed_ids(load([sqs_record(sns_envelope(item("a", "quiet")))])) == set()
    first = _last_updated(pgstac, "quiet")
    assert failed_ids(load([sqs_record(sns_envelope(item("b", "quiet")))])) == set()
    assert _last_updated(pgstac, "quiet") == first
    # WHEN the interval has passed and the next batch is for another collection only
    load_handler.processor.stats_interval = 0.0
    try:
        assert failed_ids(load([sqs_record(sns_envelope(collection("busy")))])) == set()
        assert failed_ids(load([sqs_record(sns_envelope(item("x", "busy")))])) == set()
    finally:
        load_handler.processor.stats_interval = 60.0
    # THEN the skipped refresh of the quiet collection has run
    assert _last_updated(pgstac, "quiet") > first
    with pgstac.connect() as conn:
        stale = conn.execute("SELECT count(*) FROM stactools_ingest.stale_partitions").fetchone()
    assert stale == (0,)


def test_a_scheduled_call_refreshes_what_batches_skipped(pgstac, load):
    from item_load.upsert import refresh_stale_partitions

    assert failed_ids(load([sqs_record(sns_envelope(collection("quiet")))])) == set()
    assert failed_ids(load([sqs_record(sns_envelope(item("a", "quiet")))])) == set()
    first = _last_updated(pgstac, "quiet")
    assert failed_ids(load([sqs_record(sns_envelope(item("b", "quiet")))])) == set()
    # WHEN no batch comes at all, a maintenance call refreshes the skipped partition
    with pgstac.connect() as conn:
        assert refresh_stale_partitions(conn, older_than=3600.0) == []  # not due yet
        (partition,) = refresh_stale_partitions(conn, older_than=0.0)
    assert partition.startswith("_items_")
    assert _last_updated(pgstac, "quiet") > first


def test_the_scheduled_maintenance_event_refreshes_what_batches_skipped(pgstac, load, monkeypatch):
    # GIVEN a partition whose stats refresh a batch skipped, and no batch coming after it
    assert failed_ids(load([sqs_record(sns_envelope(collection("quiet")))])) == set()
    assert failed_ids(load([sqs_record(sns_envelope(item("a", "quiet")))])) == set()
    first = _last_updated(pgstac, "quiet")
    assert failed_ids(load([sqs_record(sns_envelope(item("b", "quiet")))])) == set()
    assert _last_updated(pgstac, "quiet") == first
    # WHEN the schedule invokes ItemLoad with its maintenance event, once the interval is over
    monkeypatch.setattr(load_handler.settings, "partition_stats_interval_seconds", 0.0)
    response = load_handler.handler(MAINTENANCE_EVENT, LambdaContext())
    # THEN the skipped refresh ran, and the response names the partition
    assert _last_updated(pgstac, "quiet") > first
    (partition,) = response["refreshed_partitions"]
    assert partition.startswith("_items_")


def test_the_maintenance_event_before_any_batch_refreshes_nothing(pgstac, monkeypatch):
    # GIVEN a pgstac ItemLoad has never written to (no stactools_ingest tables yet)
    load_handler.connections.discard()
    try:
        # WHEN the schedule's first call comes
        response = load_handler.handler(MAINTENANCE_EVENT, LambdaContext())
    finally:
        load_handler.connections.discard()
    # THEN it succeeds with nothing to do
    assert response == {"refreshed_partitions": [], "ledger_rows_expired": 0}
