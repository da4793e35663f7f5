"""One bad message never fails another: errors are classified by SQLSTATE, not exception type."""

from __future__ import annotations

import random

import psycopg
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

from item_load import db
from item_load import handler as load_handler


def _incompressible_text(n: int, seed: int = 9) -> str:
    """Random CJK text: PostgreSQL cannot compress it under the btree row limit (~2.7 KB)."""
    rng = random.Random(seed)
    return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n))


@pytest.mark.parametrize(
    ("sqlstate", "outage", "retryable"),
    [
        ("08006", True, False),  # connection failure
        ("08001", True, False),  # cannot connect
        ("57P01", True, False),  # admin shutdown
        ("57P03", True, False),  # cannot connect now (starting up)
        ("40001", False, True),  # serialization failure
        ("40P01", False, True),  # deadlock
        ("23514", False, True),  # check violation (pgstac partition races)
        ("55P03", False, True),  # lock not available (lock_timeout)
        ("54000", False, False),  # index row size exceeds: the record's fault
        ("22021", False, False),  # invalid byte sequence
        ("22P02", False, False),  # invalid text representation
        ("23505", False, False),  # unique violation
        ("42P01", False, False),  # undefined table
        ("P0001", False, False),  # raise exception (a site's trigger)
    ],
)
def test_classification_by_sqlstate(sqlstate, outage, retryable):
    error = psycopg.errors.lookup(sqlstate)("x")
    assert (db.is_outage(error), db.is_retryable(error)) == (outage, retryable)


def test_connection_errors_without_sqlstate_are_outages_client_data_errors_are_not():
    assert db.is_outage(psycopg.OperationalError("connection refused"))
    assert db.is_outage(psycopg.InterfaceError("the connection is closed"))
    # psycopg refuses a NUL in a text value itself, before PostgreSQL sees it: the record's fault
    assert not db.is_outage(psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00)"))
    assert not db.is_outage(ValueError("boom"))


def test_nul_in_collection_fails_alone(with_collection, load, caplog):
    # GIVEN an item whose collection id holds U+0000 (PostgreSQL's text refuses it)
    bad = sqs_record(sns_envelope(item("nul-coll", "test\u0000collection")), message_id="bad")
    good = sqs_record(sns_envelope(item("fine")), message_id="good")
    # WHEN it is loaded with a good item
    response = load([bad, good])
    # THEN only its message fails, naming the collection problem; the good item lands
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert with_collection.item_ids(COLL) == ["fine"]
    reasons = logged_reasons(caplog, "bad")
    assert reasons and "0x00" in reasons[0] and "collection" in reasons[0]


def test_nul_in_collection_fails_alone_when_creating_missing(pgstac, load, monkeypatch, caplog):
    monkeypatch.setattr(load_handler.processor, "create_collections_if_missing", True)
    bad = sqs_record(sns_envelope(item("nul-coll", "new\u0000collection")), message_id="bad")
    good = sqs_record(sns_envelope(item("fine", "new-collection")), message_id="good")
    assert load([bad, good]) == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert pgstac.item_ids("new-collection") == ["fine"]


def test_index_row_too_large_fails_the_record_alone(with_collection, load, caplog):
    # GIVEN an item id too large for the btree index on items (SQLSTATE 54000), among good items
    huge = _incompressible_text(3000)
    bad = sqs_record(sns_envelope(item(huge)), message_id="huge-id")
    good = [sqs_record(sns_envelope(item(f"g{n}")), message_id=f"g{n}") for n in range(20)]
    # WHEN the batch is loaded
    response = load([*good[:10], bad, *good[10:]])
    # THEN only that record fails, with PostgreSQL's reason, not "pgstac unavailable"
    assert response == {"batchItemFailures": [{"itemIdentifier": "huge-id"}]}
    assert with_collection.item_ids(COLL) == sorted(f"g{n}" for n in range(20))
    reasons = logged_reasons(caplog, "huge-id")
    assert reasons and "index row" in reasons[0] and "unavailable" not in reasons[0]


def test_placeholder_collection_insert_refused_fails_its_items_alone(pgstac, load, monkeypatch):
    # GIVEN CREATE_COLLECTIONS_IF_MISSING and an item whose collection id is too large to index
    monkeypatch.setattr(load_handler.processor, "create_collections_if_missing", True)
    bad = sqs_record(sns_envelope(item("x", _incompressible_text(3000))), message_id="bad")
    good = sqs_record(sns_envelope(item("y", "made-here")), message_id="good")
    # WHEN loaded with an item of another missing collection
    response = load([bad, good])
    # THEN the placeholder for the good one is made and its item lands; the bad one fails alone
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert pgstac.item_ids("made-here") == ["y"]


def test_exception_in_the_writer_fails_only_its_records(with_collection, load, monkeypatch):
    # GIVEN a bug in the writer that only one record triggers (not a database error)
    from item_load import upsert

    real_of = upsert.Bounds.of.__func__

    def of(cls, entries):
        if any(e.doc.body.get("id") == "boom" for e in entries):
            raise RuntimeError("writer bug")
        return real_of(cls, entries)

    monkeypatch.setattr(upsert.Bounds, "of", classmethod(of))
    records = [sqs_record(sns_envelope(item(f"w{n}")), message_id=f"w{n}") for n in range(10)]
    bad = sqs_record(sns_envelope(item("boom")), message_id="boom")
    # WHEN it is loaded among good records
    response = load([*records[:5], bad, *records[5:]])
    # THEN it fails alone and the others land
    assert response == {"batchItemFailures": [{"itemIdentifier": "boom"}]}
    assert with_collection.item_ids(COLL) == sorted(f"w{n}" for n in range(10))


def test_exception_in_placeholder_insert_fails_only_its_items(pgstac, load, monkeypatch):
    from item_load import core

    monkeypatch.setattr(load_handler.processor, "create_collections_if_missing", True)
    real = core.minimal_collection

    def minimal(collection_id):
        if collection_id == "cursed":
            raise RuntimeError("placeholder bug")
        return real(collection_id)

    monkeypatch.setattr(core, "minimal_collection", minimal)
    bad = sqs_record(sns_envelope(item("x", "cursed")), message_id="bad")
    good = sqs_record(sns_envelope(item("y", "blessed")), message_id="good")
    assert load([bad, good]) == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert pgstac.item_ids("blessed") == ["y"]


def test_rejected_records_are_exactly_the_batch_item_failures(with_collection, load):
    # The processor's bookkeeping path for records the load rejected (not the parse step)
    records = [sqs_record(sns_envelope(item(f"k{n}")), message_id=f"k{n}") for n in range(4)]
    rejected = [
        sqs_record(sns_envelope(item("r1", "nowhere")), message_id="r1"),
        sqs_record(sns_envelope(item("r2", dt="never")), message_id="r2"),
    ]
    response = load([records[0], rejected[0], *records[1:3], rejected[1], records[3]])
    assert response == {"batchItemFailures": [{"itemIdentifier": "r1"}, {"itemIdentifier": "r2"}]}
    assert with_collection.item_ids(COLL) == ["k0", "k1", "k2", "k3"]


def test_one_loader_per_connection(with_collection, load):
    # GIVEN two batches on the same (warm) connection
    assert failed_ids(load([sqs_record(sns_envelope(item("one")))])) == set()
    first = load_handler.processor.batch_loader
    assert failed_ids(load([sqs_record(sns_envelope(item("two")))])) == set()
    # THEN they share one BatchLoader, whose PgstacDB never built a connection pool
    assert first is not None and load_handler.processor.batch_loader is first
    assert first.loader.db.pool is None


def test_lock_timeout_retried_then_fails_the_batch_as_an_outage(
    with_collection, load, monkeypatch, caplog
):
    # GIVEN another loader holding the collection's lock past our lock_timeout
    settings = load_handler.connections.settings
    monkeypatch.setattr(
        load_handler.connections, "settings", settings.model_copy(update={"lock_timeout_ms": 50})
    )
    load_handler.connections.discard()
    records = [sqs_record(sns_envelope(item(f"l{n}")), message_id=f"l{n}") for n in range(3)]
    with with_collection.connect() as other:
        other.execute("SELECT pg_advisory_lock(hashtext('stactools-ingest:' || %s))", (COLL,))
        # WHEN a batch arrives, its retries (tenacity) run out
        response = load(records)
    # THEN the transaction was retried, then no record is blamed: all are left to SQS
    retries = [r for r in caplog.records if getattr(r, "sqlstate", None) == "55P03"]
    assert [r.attempt for r in retries] == list(range(1, db.RETRY_ATTEMPTS))
    assert failed_ids(response) == {"l0", "l1", "l2"}
    assert with_collection.item_ids(COLL) == []
    # AND once the lock is free the retry lands them
    assert failed_ids(load(records)) == set()
    assert with_collection.item_ids(COLL) == ["l0", "l1", "l2"]


def test_collections_pgstac_refuses_fail_alone(pgstac, load, caplog):
    nul = sqs_record(sns_envelope(collection("bad\u0000id")), message_id="nul")
    huge = sqs_record(sns_envelope(collection(_incompressible_text(3000))), message_id="huge")
    good = sqs_record(sns_envelope(collection("fine")), message_id="good")
    item_of_good = sqs_record(sns_envelope(item("i", "fine")), message_id="item")
    response = load([nul, huge, good, item_of_good])
    assert failed_ids(response) == {"nul", "huge"}
    assert pgstac.item_ids("fine") == ["i"]
    assert "index row" in logged_reasons(caplog, "huge")[0]
