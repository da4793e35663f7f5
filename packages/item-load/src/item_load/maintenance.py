"""What ItemLoad does on a schedule instead of per batch: partition stats refreshes it skipped,
and the ledger's expiry.

A batch inside a partition's bounds skips pgstac's stats refresh for the interval and records the
partition in ``stactools_ingest.stale_partitions``; the next batch of any collection runs what is
due. When no batch comes at all, the scheduled call (``handler.MAINTENANCE_EVENT``) does.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from item_load import ledger
from item_load.db import translate_errors
from item_load.schema import ensure_schema
from item_load.upsert import refresh_stale_partitions

# What the CDK app's schedule sends ItemLoad instead of an SQS event (infrastructure/ingestion.py).
MAINTENANCE_EVENT = {"maintenance": "refresh-partition-stats"}


def is_maintenance(event: dict) -> bool:
    """Whether a Lambda event is the schedule's maintenance call rather than an SQS batch."""
    return event.get("maintenance") == MAINTENANCE_EVENT["maintenance"]


def refresh_skipped_stats(conn: psycopg.Connection, older_than: float) -> list[str]:
    """Refresh the partitions whose skipped refresh is ``older_than`` seconds old; their names."""
    with translate_errors("refreshing skipped partition stats"):
        ensure_schema(conn)  # the schedule may fire before the first batch made the tables
        return refresh_stale_partitions(conn, older_than)


def prune_ledger(conn: psycopg.Connection, retention_days: int) -> int:
    """Delete ledger rows not updated for ``retention_days``; how many went."""
    with translate_errors("expiring ledger rows"):
        ensure_schema(conn)
        return ledger.prune(conn, timedelta(days=retention_days))
