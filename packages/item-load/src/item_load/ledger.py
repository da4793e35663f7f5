"""The ledger: what happened to each request, in ``stactools_ingest.ledger`` beside pgstac.

ItemLoad is its only writer on AWS (ItemGen reports through status messages on the load topic,
``ingest_common.ledger``), and the local workers write it through the same functions. A request
is ``loaded`` in the same transaction as its items (``CollectionWriter.write``), so the ledger
never claims what pgstac does not hold; failures are written after the load decided them.

Writes arrive out of order (ItemGen's ``generated`` report may be loaded after the items it
published), so a state applies only if it says more than the one recorded: ``queued`` never
overwrites anything else, ``generated`` only ``queued``, and ``superseded`` never ``loaded``
(a redelivery of a loaded message that lost to a newer one does not unsay that it loaded).
Outcomes (``loaded``, ``failed``, ``dead_lettered``) replace each other in the order they come:
a redriven dead letter that loads becomes ``loaded``; a retry failing again, ``failed``. But
ItemGen's failures on a redelivery (attempt 2 or later) never replace what the load stage
decided (``loaded``, ``superseded``): once its items are published, another delivery of the same
message that fails (SQS delivers at least once) does not take back items pgstac holds. A first
attempt that fails is a request sent again under an id it used before: that failure shows.
A write that does not apply is no news: the row's ``updated_at`` stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ingest_common.ledger import (
    DEAD_LETTERED,
    FAILED,
    GEN_STAGE,
    GENERATED,
    LOAD_STAGE,
    LOADED,
    QUEUED,
    STATES,
    SUPERSEDED,
)
from item_load.messages import Document

ERROR_CHARS = 4000
"""A reason is cut to this many characters: enough for a cause, never a whole document."""
DELETE_CHUNK = 10_000


@dataclass(slots=True)
class LedgerEntry:
    """One write to one request's ledger row."""

    request_id: str
    state: str
    stage: str
    collection: str | None = None
    items: list[tuple[str, str]] = field(default_factory=list)
    generated: int | None = None
    error: str | None = None
    attempts: int = 0
    submission_id: str | None = None


def for_document(doc: Document, state: str, collection: str | None) -> LedgerEntry:
    """What the load stage says about one document's request (no items: ``record_staged``
    writes those of loaded items from the staging table)."""
    return LedgerEntry(
        doc.request_id or doc.message_id,
        state,
        LOAD_STAGE,
        collection,
        attempts=doc.attempts,
        submission_id=doc.submission_id,
    )


def failure(
    request_id: str,
    stage: str,
    reason: str,
    *,
    dead: bool,
    attempts: int,
    max_receives: int | None = None,
    submission_id: str | None = None,
) -> LedgerEntry:
    """A failed request: ``dead_lettered`` when the stage dead-lettered it, or when this was
    its last receive (the queue's redrive policy moves it to the DLQ); else ``failed``."""
    if not dead and max_receives is not None and attempts >= max_receives:
        dead = True
        reason = (
            f"{reason} (failed on all {attempts} receives: the queue moves it to the "
            "dead-letter queue)"
        )
    return LedgerEntry(
        request_id,
        DEAD_LETTERED if dead else FAILED,
        stage,
        error=reason,
        attempts=attempts,
        submission_id=submission_id,
    )


def applies(new: str, old: str, new_stage: str = LOAD_STAGE, new_attempts: int = 0) -> bool:
    """Whether state ``new`` (from ``new_stage``, on attempt ``new_attempts``) replaces ``old``
    (the module docstring's rule)."""
    if new == QUEUED:
        return old == QUEUED
    if new == GENERATED:
        return old in (QUEUED, GENERATED)
    if new == SUPERSEDED:
        return old != LOADED
    return not (new_stage == GEN_STAGE and new_attempts > 1 and old in (LOADED, SUPERSEDED))


_APPLIES_SQL = f"""NOT (
    (EXCLUDED.state = 'queued' AND l.state <> 'queued')
    OR (EXCLUDED.state = 'generated' AND l.state NOT IN ('queued', 'generated'))
    OR (EXCLUDED.state = 'superseded' AND l.state = 'loaded')
    OR (EXCLUDED.stage = '{GEN_STAGE}' AND EXCLUDED.attempts > 1
        AND l.state IN ('loaded', 'superseded')))"""

_ON_CONFLICT = f"""
    ON CONFLICT (request_id) DO UPDATE SET
        state = CASE WHEN {_APPLIES_SQL} THEN EXCLUDED.state ELSE l.state END,
        stage = CASE WHEN {_APPLIES_SQL} THEN EXCLUDED.stage ELSE l.stage END,
        error = CASE WHEN {_APPLIES_SQL} THEN EXCLUDED.error ELSE l.error END,
        collection = coalesce(EXCLUDED.collection, l.collection),
        items = CASE
            WHEN EXCLUDED.items = '[]'::jsonb THEN l.items
            WHEN l.items = '[]'::jsonb THEN EXCLUDED.items
            ELSE (SELECT jsonb_agg(DISTINCT e)
                  FROM jsonb_array_elements(l.items || EXCLUDED.items) e)
        END,
        generated = coalesce(EXCLUDED.generated, l.generated),
        attempts = greatest(l.attempts, EXCLUDED.attempts),
        submission_id = coalesce(l.submission_id, EXCLUDED.submission_id),
        -- a state that does not apply (queueing again what has moved on, a late report) is
        -- no news
        updated_at = CASE WHEN {_APPLIES_SQL} THEN now() ELSE l.updated_at END
"""

_RECORD = (
    """
    INSERT INTO stactools_ingest.ledger AS l
        (request_id, state, stage, collection, items, generated, error, attempts, submission_id)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
        %s::integer[], %s::text[], %s::integer[], %s::text[])
    """
    + _ON_CONFLICT
)

# Every staged row but those refused: its request loaded it. One statement, read server-side
# from the staging table (the COPY carried request_id and attempts): passing a thousand
# requests' ids and items as parameters cost more than the statement itself.
_RECORD_STAGED = (
    """
    INSERT INTO stactools_ingest.ledger AS l
        (request_id, state, stage, collection, items, attempts, submission_id)
    SELECT request_id, 'loaded', %(stage)s, %(collection)s,
        jsonb_agg(jsonb_build_object('collection', collection, 'id', id) ORDER BY seq),
        max(attempts), max(submission_id)
    FROM {staging}
    WHERE request_id IS NOT NULL AND seq <> ALL(%(refused)s::integer[])
    GROUP BY request_id
    ORDER BY request_id
    """
    + _ON_CONFLICT
)


def _merge(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """One entry per request id (one statement may not update a row twice), merged in order
    by the same rule the statement applies."""
    merged: dict[str, LedgerEntry] = {}
    for entry in entries:
        known = merged.get(entry.request_id)
        if known is None:
            merged[entry.request_id] = LedgerEntry(
                **{name: getattr(entry, name) for name in LedgerEntry.__slots__}
            )
            merged[entry.request_id].items = list(entry.items)
            continue
        if applies(entry.state, known.state, entry.stage, entry.attempts):
            known.state, known.stage, known.error = entry.state, entry.stage, entry.error
        known.collection = entry.collection or known.collection
        known.items.extend(entry.items)
        known.generated = entry.generated if entry.generated is not None else known.generated
        known.attempts = max(known.attempts, entry.attempts)
        known.submission_id = known.submission_id or entry.submission_id
    return list(merged.values())


def _items_json(items: list[tuple[str, str]]) -> str:
    unique = dict.fromkeys(items)
    return orjson.dumps([{"collection": c, "id": i} for c, i in unique]).decode()


def _text(value: str | None, limit: int) -> str | None:
    """A value PostgreSQL's text takes: NUL replaced, cut to ``limit`` characters."""
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def record(conn: psycopg.Connection, entries: Iterable[LedgerEntry]) -> None:
    """Write ``entries`` in one statement, in the caller's transaction."""
    # in one order for every writer, so two batches touching the same rows cannot deadlock
    rows = sorted(_merge(entries), key=lambda r: r.request_id)
    if not rows:
        return
    conn.execute(
        _RECORD,
        (
            [_text(r.request_id, 256) for r in rows],
            [r.state for r in rows],
            [r.stage for r in rows],
            [_text(r.collection, 1000) for r in rows],
            [_items_json(r.items) for r in rows],
            [r.generated for r in rows],
            [_text(r.error, ERROR_CHARS) for r in rows],
            [r.attempts for r in rows],
            [_text(r.submission_id, 256) for r in rows],
        ),
    )


def record_staged(
    conn: psycopg.Connection, staging: str, collection: str, refused: Sequence[int]
) -> None:
    """Record the staged rows of ``collection`` (but the ``refused`` seqs) as loaded by their
    requests, in the caller's transaction: the one that wrote the rows."""
    conn.execute(
        sql.SQL(_RECORD_STAGED).format(staging=sql.Identifier(staging)),
        {"stage": LOAD_STAGE, "collection": collection, "refused": list(refused)},
    )


def requeue(conn: psycopg.Connection, request_ids: Sequence[str]) -> None:
    """Mark requests ``queued`` again, whatever they were: a person redrove them. Their last
    error goes (the next attempt gives its own)."""
    conn.execute(
        """
        UPDATE stactools_ingest.ledger
        SET state = 'queued', error = NULL, updated_at = now()
        WHERE request_id = ANY(%s)
        """,
        (list(request_ids),),
    )


def loaded_over_time(
    conn: psycopg.Connection, since: datetime, buckets: int = 24
) -> list[tuple[datetime, int]]:
    """Items loaded per time bucket from ``since`` to now (the status page's chart): each
    bucket's start and the items of requests that became ``loaded`` in it."""
    rows = conn.execute(
        """
        WITH bounds AS (
            SELECT extract(epoch FROM %(since)s::timestamptz) AS lo,
                   extract(epoch FROM now()) + 1 AS hi
        )
        SELECT width_bucket(extract(epoch FROM updated_at), lo, hi, %(n)s) AS b,
            sum(jsonb_array_length(items))
        FROM stactools_ingest.ledger, bounds
        WHERE state = 'loaded' AND updated_at >= %(since)s
        GROUP BY b
        """,
        {"since": since, "n": buckets},
    ).fetchall()
    counts = {int(b): int(n) for b, n in rows}
    now = conn.execute("SELECT now()").fetchone()[0]
    step = (now - since) / buckets
    return [(since + step * k, counts.get(k + 1, 0)) for k in range(buckets)]


# -- reading -----------------------------------------------------------------------------------

_COLUMNS = (
    "request_id, state, stage, collection, items, generated, error, attempts, submission_id, "
    "created_at, updated_at"
)


def _as_dict(row: Sequence[Any]) -> dict[str, Any]:
    (
        request_id,
        state,
        stage,
        collection,
        items,
        generated,
        error,
        attempts,
        submission,
        created,
        updated,
    ) = row
    return {
        "request_id": request_id,
        "state": state,
        "stage": stage,
        "collection": collection,
        "items": items,
        "generated": generated,
        "error": error,
        "attempts": attempts,
        "submission_id": submission,
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
    }


def exists(conn: psycopg.Connection) -> bool:
    """Whether this database has a ledger (a pgstac nothing was ever loaded into has none)."""
    return conn.execute("SELECT to_regclass('stactools_ingest.ledger') IS NOT NULL").fetchone()[0]


def get(conn: psycopg.Connection, request_id: str) -> dict[str, Any] | None:
    """One request's row as ``status --json`` prints it, or None when the ledger has none."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM stactools_ingest.ledger WHERE request_id = %s", (request_id,)
    ).fetchone()
    return None if row is None else _as_dict(row)


def _where(
    state: str | None,
    since: datetime | None,
    collection: str | None,
    submission_id: str | None,
) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for clause, value in (
        ("state = %s", state),
        ("updated_at >= %s", since),
        ("collection = %s", collection),
        ("submission_id = %s", submission_id),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def find(
    conn: psycopg.Connection,
    *,
    state: str | None = None,
    since: datetime | None = None,
    collection: str | None = None,
    submission_id: str | None = None,
    limit: int = 100,
    before: tuple[datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows newest first; ``before`` (the last row's ``updated_at`` and id) pages on."""
    where, params = _where(state, since, collection, submission_id)
    if before is not None:
        where += (" AND " if where else " WHERE ") + "(updated_at, request_id) < (%s, %s)"
        params += list(before)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM stactools_ingest.ledger{where} "
        "ORDER BY updated_at DESC, request_id DESC LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [_as_dict(r) for r in rows]


def counts(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    collection: str | None = None,
    submission_id: str | None = None,
) -> dict[str, int]:
    """How many requests are in each state (every state named, zero included)."""
    where, params = _where(None, since, collection, submission_id)
    rows = conn.execute(
        f"SELECT state, count(*) FROM stactools_ingest.ledger{where} GROUP BY state", params
    ).fetchall()
    found = dict(rows)
    return {s: found.get(s, 0) for s in STATES}


def prune(conn: psycopg.Connection, retention: timedelta) -> int:
    """Delete rows not updated within ``retention``, in short transactions; how many went."""
    removed = 0
    while True:
        with conn.transaction():
            cur = conn.execute(
                """
                DELETE FROM stactools_ingest.ledger WHERE request_id IN (
                    SELECT request_id FROM stactools_ingest.ledger
                    WHERE updated_at < now() - %s LIMIT %s)
                """,
                (retention, DELETE_CHUNK),
            )
        removed += cur.rowcount
        if cur.rowcount < DELETE_CHUNK:
            return removed
