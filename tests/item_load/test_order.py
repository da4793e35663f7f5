"""Newest wins across batches: an older message delivered late succeeds and changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import (
    COLL,
    collection,
    failed_ids,
    item,
    logged_reasons,
    sns_envelope,
    sqs_record,
)

from item_load.core import load_documents
from item_load.messages import Document

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _version(version: str, item_id: str = "it", **props) -> dict:
    doc = item(item_id)
    doc["properties"] = {"datetime": "2020-06-01T00:00:00Z", "version": version, **props}
    return doc


def _versions(db) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute("SELECT id, content->'properties'->>'version' FROM items").fetchall()
    return dict(rows)


def test_an_older_message_in_a_later_batch_changes_nothing(with_collection, load):
    # GIVEN the newer version was loaded first (the older one was slow, or redriven)
    newer = sqs_record(sns_envelope(_version("new"), timestamp=NOW))
    assert failed_ids(load([newer])) == set()
    # WHEN the older message arrives in a later batch
    older = sqs_record(sns_envelope(_version("old"), timestamp=NOW - timedelta(minutes=5)))
    # THEN it succeeds (nothing to retry) and the newer content stays
    assert failed_ids(load([older])) == set()
    assert _versions(with_collection) == {"it": "new"}


def test_raw_deliveries_are_ordered_by_sqs_sent_timestamp_across_batches(with_collection, load):
    assert failed_ids(load([sqs_record(json.dumps(_version("later")), sent_ms=2000)])) == set()
    assert failed_ids(load([sqs_record(json.dumps(_version("earlier")), sent_ms=1000)])) == set()
    assert _versions(with_collection) == {"it": "later"}


def test_a_newer_message_and_an_equal_one_are_applied(with_collection, load):
    assert failed_ids(load([sqs_record(sns_envelope(_version("v1"), timestamp=NOW))])) == set()
    later = NOW + timedelta(seconds=1)
    assert failed_ids(load([sqs_record(sns_envelope(_version("v2"), timestamp=later))])) == set()
    assert _versions(with_collection) == {"it": "v2"}
    # the same send time again: the later delivery wins, so a redelivery still applies
    assert failed_ids(load([sqs_record(sns_envelope(_version("v3"), timestamp=later))])) == set()
    assert _versions(with_collection) == {"it": "v3"}
    assert with_collection.count(COLL) == 1


def test_superseded_documents_are_counted_not_loaded(with_collection):
    t = NOW.timestamp()
    with with_collection.connect() as conn:
        first = load_documents(conn, [Document("m1", t, _version("new"))])
        second = load_documents(
            conn,
            [Document("m2", t - 60, _version("old")), Document("m3", t - 60, _version("x", "b"))],
        )
    assert (first.items_loaded, first.superseded) == (1, 0)
    assert (second.items_loaded, second.superseded, second.failures) == (1, 1, {})
    assert _versions(with_collection) == {"it": "new", "b": "x"}


def test_a_document_without_send_time_counts_as_sent_when_loaded(with_collection):
    # GIVEN an item loaded from an SNS message of a minute ago
    t = datetime.now(UTC).timestamp()
    with with_collection.connect() as conn:
        assert load_documents(conn, [Document("m1", t - 60, _version("sns"))]).items_loaded == 1
        # WHEN a local caller loads a version without a send time, THEN it is applied
        local = load_documents(conn, [Document("m2", None, _version("local"))])
        assert (local.items_loaded, local.superseded) == (1, 0)
        assert _versions(with_collection) == {"it": "local"}
        # AND a message sent before that load is older than it
        late = load_documents(conn, [Document("m3", t - 30, _version("late"))])
        assert (late.items_loaded, late.superseded) == (0, 1)
    assert _versions(with_collection) == {"it": "local"}


def test_the_applied_table_is_written_with_the_items(with_collection, load):
    assert failed_ids(load([sqs_record(sns_envelope(_version("v1"), timestamp=NOW))])) == set()
    with with_collection.connect() as conn:
        rows = conn.execute(
            "SELECT collection, id, sent_at FROM stactools_ingest.applied"
        ).fetchall()
    assert rows == [(COLL, "it", NOW)]


TRIGGER = """
CREATE FUNCTION no_bad_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content->'properties'->>'version' = 'bad' THEN
        RAISE EXCEPTION 'no_bad_version: item % refused', NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER no_bad_version BEFORE INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION no_bad_version();
"""


@pytest.mark.parametrize("how", ["refused-by-postgres", "unconvertible"])
def test_when_the_newest_copy_fails_an_older_copy_is_not_reported_loaded(
    with_collection, load, caplog, how
):
    with with_collection.connect() as conn:
        conn.execute(TRIGGER)
    bad = {
        "refused-by-postgres": _version("bad"),
        "unconvertible": _version("bad", note="nul\u0000"),  # jsonb refuses NUL
    }[how]
    # GIVEN the newest copy of an item is rejected and an older copy is valid
    newest = sqs_record(sns_envelope(bad, timestamp=NOW), message_id="newest")
    older = sqs_record(sns_envelope(_version("old"), timestamp=NOW - timedelta(minutes=1)),
                       message_id="older")  # fmt: skip
    other = sqs_record(sns_envelope(_version("ok", "other")), message_id="other")
    # WHEN both arrive in one batch
    response = load([older, newest, other])
    # THEN the older copy's message is not reported succeeded while its item is missing:
    # it fails too, saying why, and will be retried
    assert failed_ids(response) == {"newest", "older"}
    assert _versions(with_collection) == {"other": "ok"}
    (reason,) = logged_reasons(caplog, "older")
    assert reason.startswith("item 'it': a newer copy in message 'newest' was not loaded (")
    assert reason.endswith("); this older copy was not loaded either and will be retried")
    # AND retried alone (the newest dead-lettered), it loads
    retry = sqs_record(older["body"], message_id="older")
    assert failed_ids(load([retry])) == set()
    assert _versions(with_collection) == {"other": "ok", "it": "old"}


def test_an_older_copy_whose_newer_copy_loaded_succeeds(with_collection, load):
    # GIVEN the newer copy travels in a message with a bad item, and loads
    fc = {
        "type": "FeatureCollection",
        "features": [_version("new"), {**item("g"), "geometry": None}],
    }
    newer = sqs_record(sns_envelope(fc, timestamp=NOW), message_id="newer")
    older = sqs_record(sns_envelope(_version("old"), timestamp=NOW - timedelta(minutes=1)),
                       message_id="older")  # fmt: skip
    # WHEN both arrive in one batch, THEN only the message with the bad item fails
    assert failed_ids(load([older, newer])) == {"newer"}
    assert _versions(with_collection) == {"it": "new"}


def test_an_older_collection_message_does_not_overwrite_a_newer_one(pgstac, load):
    newer = collection("c", description="newer")
    older = collection("c", description="older")
    assert failed_ids(load([sqs_record(sns_envelope(newer, timestamp=NOW))])) == set()
    late = sqs_record(sns_envelope(older, timestamp=NOW - timedelta(minutes=5)))
    assert failed_ids(load([late])) == set()
    with pgstac.connect() as conn:
        description = conn.execute(
            "SELECT content->>'description' FROM collections WHERE id = 'c'"
        ).fetchone()[0]
    assert description == "newer"


def test_ensure_schema_is_idempotent_and_coexists_with_the_local_queue(pgstac):
    from item_load.schema import ensure_schema
    from stactools_ingest.queue import LocalQueues

    with pgstac.connect() as conn:
        LocalQueues(conn)
        ensure_schema(conn)
    with pgstac.connect() as conn:
        ensure_schema(conn)
        ensure_schema(conn)
        LocalQueues(conn)
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'stactools_ingest' ORDER BY 1"
        ).fetchall()
    assert {"applied", "applied_collections", "messages"} <= {t[0] for t in tables}


def test_concurrent_loaders_keep_the_newest_whatever_commits_last(with_collection):
    import threading

    # GIVEN four loaders sending versions of the same 50 items, each with its own send time,
    # in an order unrelated to their send times
    sent = {0: 30.0, 1: 10.0, 2: 40.0, 3: 20.0}  # loader 2 sent the newest versions
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            with with_collection.connect() as conn:
                for _ in range(3):
                    docs = [
                        Document(f"w{w}-{n}", NOW.timestamp() + sent[w], _version(f"v{w}", f"i{n}"))
                        for n in range(50)
                    ]
                    outcome = load_documents(conn, docs)
                    assert outcome.failures == {}
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in sent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN every item holds loader 2's version, once
    assert errors == []
    assert _versions(with_collection) == {f"i{n}": "v2" for n in range(50)}
    assert with_collection.count(COLL) == 50


def test_newest_wins_reads_only_the_rows_of_the_batch_not_the_whole_collection(with_collection):
    # GIVEN a collection whose items were loaded before: 20,000 send times remembered, and the
    # table's statistics still those of an empty one (as during a first large run)
    with with_collection.connect() as conn:
        conn.execute(
            "INSERT INTO stactools_ingest.applied (collection, id, sent_at) "
            "SELECT %s, 'earlier-' || g, now() - interval '1 day' "
            "FROM generate_series(1, 20000) g",
            (COLL,),
        )
    # WHEN one more item loads
    with with_collection.connect() as conn, conn.transaction():
        outcome = load_documents(conn, [Document("m1", NOW.timestamp(), _version("v1"))])
        (blocks,) = conn.execute(
            "SELECT pg_stat_get_xact_blocks_fetched('stactools_ingest.applied'::regclass)"
        ).fetchone()
    # THEN it loaded, and checking that it is the newest read a few blocks of the send times,
    # not all the collection's (which made each batch of a growing collection slower)
    assert outcome.items_loaded == 1 and not outcome.failures
    assert _versions(with_collection) == {"it": "v1"}
    assert blocks < 20, f"{blocks} blocks of stactools_ingest.applied read for one item"
