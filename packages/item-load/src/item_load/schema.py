"""The load stage's own tables, in the ``stactools_ingest`` schema beside pgstac.

``applied`` and ``applied_collections`` remember, per item and per collection, the send time of
the message whose content pgstac holds (the SNS ``Timestamp``, or SQS ``SentTimestamp`` for raw
deliveries). A message older than that succeeds without changing anything: a DLQ redrive, SQS
reordering or a slow ItemGen never puts older content back. ``stale_partitions`` lists partitions
whose pgstac stats refresh a load skipped (``CollectionWriter``), for a later batch or a
maintenance call to run. They are written in the same
transaction as the items (``CollectionWriter.write``) and collections, so they never claim what
pgstac does not hold. ``ledger`` holds each request's state (``item_load.ledger``). Rows live
as long as the items they describe; deletes (issue 12) should
keep theirs as a tombstone so an older re-create stays refused.

The local queue (``stactools_ingest.queue``) keeps its tables in the same schema and takes the
same advisory lock for its DDL, so the two never race creating the schema.
"""

from __future__ import annotations

import weakref

import psycopg

SCHEMA = "stactools_ingest"
# Shared with stactools_ingest.queue: concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('stactools_ingest.schema'))"

DDL = """
CREATE SCHEMA IF NOT EXISTS stactools_ingest;
CREATE TABLE IF NOT EXISTS stactools_ingest.applied (
    collection text NOT NULL,
    id text NOT NULL,
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (collection, id)
);
COMMENT ON TABLE stactools_ingest.applied IS
    'Send time of the message whose content pgstac holds, per item; older messages are skipped.';
CREATE TABLE IF NOT EXISTS stactools_ingest.applied_collections (
    id text PRIMARY KEY,
    sent_at timestamptz NOT NULL
);
COMMENT ON TABLE stactools_ingest.applied_collections IS
    'Send time of the message whose content pgstac holds, per collection.';
CREATE TABLE IF NOT EXISTS stactools_ingest.stale_partitions (
    partition text PRIMARY KEY,
    collection text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE stactools_ingest.stale_partitions IS
    'Partitions loaded into since their pgstac stats were last refreshed (refresh skipped).';
CREATE TABLE IF NOT EXISTS stactools_ingest.ledger (
    request_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN
        ('queued', 'generated', 'loaded', 'failed', 'dead_lettered', 'superseded')),
    stage text NOT NULL,
    collection text,
    items jsonb NOT NULL DEFAULT '[]',
    generated integer,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    submission_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A load writes a ledger row per request, so its indexes are few and cheap to keep (two
-- b-trees beside the key doubled the write's cost, benchmarks/load.py): a BRIN on updated_at
-- (expiry and --since; rows are written in time order) and a b-tree on the states people list,
-- leaving out 'loaded', which most rows end in.
CREATE INDEX IF NOT EXISTS ledger_updated ON stactools_ingest.ledger USING brin (updated_at);
CREATE INDEX IF NOT EXISTS ledger_unfinished ON stactools_ingest.ledger (state, updated_at)
    WHERE state <> 'loaded';
CREATE INDEX IF NOT EXISTS ledger_submission ON stactools_ingest.ledger (submission_id)
    WHERE submission_id IS NOT NULL;
COMMENT ON TABLE stactools_ingest.ledger IS
    'What happened to each request and document (stactools-ingest status); kept 30 days.';
"""

_TABLES = (
    "stactools_ingest.applied",
    "stactools_ingest.applied_collections",
    "stactools_ingest.stale_partitions",
    "stactools_ingest.ledger",
)

# Connections that have seen the tables: the check runs once per connection, not per batch.
_ensured: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the load stage's tables if they are missing; once per connection.

    Existing tables are only looked up (no DDL, no lock, no CREATE privilege needed), so a
    deployment whose role may not create schemas works once they exist.
    """
    if conn in _ensured:
        return
    with conn.transaction():
        present = conn.execute(
            "SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
            (list(_TABLES),),
        ).fetchone()[0]
        if not present:
            conn.execute(SCHEMA_LOCK)
            conn.execute(DDL)
    _ensured.add(conn)
