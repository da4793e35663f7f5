"""The ledger as ItemLoad writes it: every record's request gets a state a person can act on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import (
    COLL,
    SITE_RULE,
    collection,
    failed_ids,
    item,
    sns_envelope,
    sqs_record,
)

from ingest_common.ledger import status_report
from item_load import handler as load_handler
from item_load import ledger
from item_load.maintenance import MAINTENANCE_EVENT


def row(db, request_id: str) -> dict | None:
    with db.connect() as conn:
        return ledger.get(conn, request_id)


def test_a_loaded_item_is_recorded_under_the_senders_request_id(with_collection, load):
    # GIVEN an item published with the message attribute request_id
    body = sns_envelope(item("a"), attributes={"request_id": "req-1"})
    # WHEN it loads
    assert failed_ids(load([sqs_record(body)])) == set()
    # THEN the ledger says loaded, naming the item and its collection
    got = row(with_collection, "req-1")
    assert got["state"] == "loaded"
    assert got["stage"] == "item-load"
    assert got["items"] == [{"collection": COLL, "id": "a"}]
    assert got["collection"] == COLL
    assert got["error"] is None
    assert got["attempts"] == 1


def test_without_a_request_id_the_sns_or_sqs_message_id_is_the_key(with_collection, load):
    # GIVEN an SNS-wrapped item without attributes, and a raw-delivered one
    sns = sqs_record(sns_envelope(item("a"), message_id="sns-msg-1"), message_id="sqs-1")
    raw = sqs_record(json.dumps(item("b")), message_id="sqs-2")
    assert failed_ids(load([sns, raw])) == set()
    # THEN the first is known by its SNS MessageId (what `aws sns publish` prints), the
    # second by its SQS messageId
    assert row(with_collection, "sns-msg-1")["items"] == [{"collection": COLL, "id": "a"}]
    assert row(with_collection, "sqs-2")["items"] == [{"collection": COLL, "id": "b"}]
    assert row(with_collection, "sqs-1") is None


def test_a_raw_delivery_request_id_attribute_counts(with_collection, load):
    record = sqs_record(json.dumps(item("a")))
    record["messageAttributes"] = {"request_id": {"stringValue": "raw-9", "dataType": "String"}}
    assert failed_ids(load([record])) == set()
    assert row(with_collection, "raw-9")["state"] == "loaded"


def test_a_feature_collection_is_one_request_with_all_its_items(with_collection, load):
    fc = {"type": "FeatureCollection", "features": [item("f1"), item("f2"), item("f3")]}
    assert (
        failed_ids(load([sqs_record(sns_envelope(fc, attributes={"request_id": "fc"}))])) == set()
    )
    assert sorted(i["id"] for i in row(with_collection, "fc")["items"]) == ["f1", "f2", "f3"]


def test_collections_are_recorded_too(pgstac, load):
    body = sns_envelope(collection("fresh"), attributes={"request_id": "coll-1"})
    assert failed_ids(load([sqs_record(body)])) == set()
    got = row(pgstac, "coll-1")
    assert (got["state"], got["collection"], got["items"]) == ("loaded", "fresh", [])


def test_a_transient_failure_is_failed_with_its_reason_and_attempts(pgstac, load):
    # GIVEN an item whose collection does not exist yet (retried: it may be on its way)
    record = sqs_record(sns_envelope(item("a", "later"), attributes={"request_id": "r"}))
    record["attributes"]["ApproximateReceiveCount"] = "2"
    assert failed_ids(load([record])) == {record["messageId"]}
    got = row(pgstac, "r")
    assert got["state"] == "failed"
    assert "collection 'later' does not exist" in got["error"]
    assert got["attempts"] == 2
    assert got["items"] == []


def test_a_failure_on_the_last_receive_is_dead_lettered(pgstac, load):
    # GIVEN the same failure on the fifth receive: SQS's redrive moves it to the DLQ now
    record = sqs_record(sns_envelope(item("a", "later"), attributes={"request_id": "r"}))
    record["attributes"]["ApproximateReceiveCount"] = "5"
    load([record])
    got = row(pgstac, "r")
    assert got["state"] == "dead_lettered"
    assert "failed on all 5 receives" in got["error"]


def test_an_invalid_record_is_recorded_even_when_it_never_parsed(with_collection, load):
    not_json = sqs_record("{not json", message_id="broken")
    undated = {**item("u"), "properties": {}}
    invalid = sqs_record(sns_envelope(undated, attributes={"request_id": "undated"}))
    assert failed_ids(load([not_json, invalid])) == {"broken", invalid["messageId"]}
    assert row(with_collection, "broken")["state"] == "failed"
    assert "not valid JSON" in row(with_collection, "broken")["error"]
    assert "datetime" in row(with_collection, "undated")["error"]


def test_the_ledger_never_claims_an_item_pgstac_refused(with_collection, load):
    # GIVEN a site rule that refuses one item of a batch
    with with_collection.connect() as conn:
        conn.execute(SITE_RULE)
    good = sqs_record(sns_envelope(item("ok"), attributes={"request_id": "good"}))
    bad = sqs_record(sns_envelope(item("reject-me"), attributes={"request_id": "bad"}))
    load([good, bad])
    assert row(with_collection, "good")["state"] == "loaded"
    got = row(with_collection, "bad")
    assert got["state"] != "loaded"
    assert got["items"] == []
    assert "site_rule" in got["error"]


def test_an_older_message_is_superseded_and_a_late_report_does_not_unsay_loaded(
    with_collection, load
):
    now = datetime.now(UTC)
    new = sns_envelope(item("a"), timestamp=now, attributes={"request_id": "new"})
    old = sns_envelope(
        item("a"), timestamp=now - timedelta(hours=1), attributes={"request_id": "old"}
    )
    assert failed_ids(load([sqs_record(new)])) == set()
    assert failed_ids(load([sqs_record(old)])) == set()
    assert row(with_collection, "old")["state"] == "superseded"
    # WHEN ItemGen's "generated" report for the new request arrives after its item loaded
    report = status_report("new", "generated", stage="item-gen", generated=1, collection=COLL)
    assert failed_ids(load([sqs_record(sns_envelope(report))])) == set()
    # THEN the request stays loaded, and the report's count is kept
    got = row(with_collection, "new")
    assert (got["state"], got["generated"]) == ("loaded", 1)
    # and a status report never reaches pgstac
    assert with_collection.item_ids(COLL) == ["a"]


@pytest.mark.parametrize("kind", ["item", "collection"])
def test_an_older_copy_in_the_same_batch_is_superseded(with_collection, load, kind):
    now = datetime.now(UTC)
    doc = item("a") if kind == "item" else collection(COLL)
    new = sns_envelope(doc, timestamp=now, attributes={"request_id": "new"})
    old = sns_envelope(doc, timestamp=now - timedelta(hours=1), attributes={"request_id": "old"})
    assert failed_ids(load([sqs_record(old), sqs_record(new)])) == set()
    assert row(with_collection, "new")["state"] == "loaded"
    got = row(with_collection, "old")
    assert got is not None and got["state"] == "superseded"


@pytest.mark.parametrize("late", ["failed", "dead_lettered"])
def test_a_late_item_gen_failure_does_not_unsay_loaded(with_collection, load, late):
    # GIVEN a request whose item loaded (ItemGen published it, then its own message was
    # delivered again, as SQS may, and that attempt failed)
    body = sns_envelope(item("a"), attributes={"request_id": "req"})
    assert failed_ids(load([sqs_record(body)])) == set()
    before = row(with_collection, "req")
    # WHEN ItemGen's failure report for the later attempt arrives, alone and beside a copy
    report = status_report("req", late, stage="item-gen", error="boom", attempts=2)
    assert failed_ids(load([sqs_record(sns_envelope(report))])) == set()
    assert row(with_collection, "req")["state"] == "loaded"
    assert failed_ids(load([sqs_record(body), sqs_record(sns_envelope(report))])) == set()
    # THEN the ledger still says what pgstac holds, and the unapplied report is no news
    got = row(with_collection, "req")
    assert (got["state"], got["stage"], got["items"]) == (
        "loaded",
        "item-load",
        [{"collection": COLL, "id": "a"}],
    )
    report = status_report("req", late, stage="item-gen", error="boom", attempts=3)
    load([sqs_record(sns_envelope(report))])
    assert row(with_collection, "req")["updated_at"] == got["updated_at"] > before["updated_at"]
    # BUT a first attempt that fails is the request sent again under its old id: that shows
    report = status_report("req", late, stage="item-gen", error="gone", attempts=1)
    load([sqs_record(sns_envelope(report))])
    got = row(with_collection, "req")
    assert (got["state"], got["stage"], got["error"]) == (late, "item-gen", "gone")


def test_a_report_before_the_load_shows_generated_then_loaded(with_collection, load):
    report = status_report("req", "generated", stage="item-gen", generated=1, collection=COLL)
    assert failed_ids(load([sqs_record(sns_envelope(report))])) == set()
    assert row(with_collection, "req")["state"] == "generated"
    body = sns_envelope(item("a"), attributes={"request_id": "req"})
    assert failed_ids(load([sqs_record(body)])) == set()
    assert row(with_collection, "req")["state"] == "loaded"


def test_a_redriven_dead_letter_that_loads_becomes_loaded(pgstac, load):
    record = sqs_record(sns_envelope(item("a", "later"), attributes={"request_id": "r"}))
    record["attributes"]["ApproximateReceiveCount"] = "5"
    load([record])
    assert row(pgstac, "r")["state"] == "dead_lettered"
    assert failed_ids(load([sqs_record(sns_envelope(collection("later")))])) == set()
    record["attributes"]["ApproximateReceiveCount"] = "1"  # redriven: a new message
    assert failed_ids(load([record])) == set()
    got = row(pgstac, "r")
    assert (got["state"], got["error"], got["items"]) == (
        "loaded",
        None,
        [{"collection": "later", "id": "a"}],
    )


@pytest.mark.parametrize(
    "report, reason",
    [
        ({"type": "stactools_ingest:status", "state": "generated"}, "request_id"),
        ({"type": "stactools_ingest:status", "request_id": "x", "state": "loaded"}, "state"),
        (
            {
                "type": "stactools_ingest:status",
                "request_id": "x",
                "state": "failed",
                "attempts": "2",
            },
            "attempts",
        ),
        ({"type": "stactools_ingest:status", "request_id": "", "state": "failed"}, "request_id"),
    ],
)
def test_a_malformed_status_report_fails_alone(with_collection, load, report, reason):
    bad = sqs_record(sns_envelope(report, message_id="bad-report"))
    good = sqs_record(sns_envelope(item("a"), attributes={"request_id": "ok"}))
    assert failed_ids(load([bad, good])) == {bad["messageId"]}
    assert row(with_collection, "ok")["state"] == "loaded"
    # the bad report is itself on record, under its message's id, with what is wrong
    got = row(with_collection, "bad-report")
    assert got["state"] == "failed" and reason in got["error"]


def test_odd_request_ids_and_reasons_are_stored_as_given(pgstac, load):
    # GIVEN a request id in unicode, and a reason carrying a NUL and 10,000 characters
    rid = "Zürich-€-🛰-" + "x" * 200
    report = status_report(rid, "failed", stage="item-gen", error="bad\x00" + "y" * 10_000)
    assert failed_ids(load([sqs_record(sns_envelope(report))])) == set()
    got = row(pgstac, rid)
    assert got["state"] == "failed"
    assert got["error"].startswith("bad\ufffd") and len(got["error"]) == ledger.ERROR_CHARS


def test_the_maintenance_call_expires_old_rows(with_collection, load, monkeypatch):
    for n in range(3):
        body = sns_envelope(item(f"i{n}"), attributes={"request_id": f"r{n}"})
        assert failed_ids(load([sqs_record(body)])) == set()
    with with_collection.connect() as conn:
        conn.execute(
            "UPDATE stactools_ingest.ledger SET updated_at = now() - interval '31 days' "
            "WHERE request_id IN ('r0', 'r1')"
        )
    from factories import LambdaContext

    result = load_handler.handler(MAINTENANCE_EVENT, LambdaContext())
    assert result["ledger_rows_expired"] == 2
    assert row(with_collection, "r0") is None and row(with_collection, "r2") is not None


def test_with_the_ledger_off_nothing_is_written(with_collection, load, monkeypatch):
    monkeypatch.setattr(load_handler.processor, "record_ledger", False)
    body = sns_envelope(item("a"), attributes={"request_id": "off"})
    assert failed_ids(load([sqs_record(body)])) == set()
    assert row(with_collection, "off") is None
    assert with_collection.item_ids(COLL) == ["a"]
