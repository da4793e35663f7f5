"""ItemLoad sends records that can never succeed straight to its DLQ; everything else retries."""

from __future__ import annotations

import boto3
import pytest
from factories import (
    COLL,
    failed_ids,
    item,
    sns_envelope,
    sqs_record,
)
from moto import mock_aws

from ingest_common.dead_letter import DeadLetterQueue
from item_load import handler as load_handler


@pytest.fixture
def sqs(aws_env):
    with mock_aws():
        yield boto3.client("sqs")


@pytest.fixture
def dlq_url(sqs, monkeypatch):
    """ItemLoad's DLQ (moto), as DEAD_LETTER_QUEUE_URL would name it."""
    url = sqs.create_queue(QueueName="item-load-dlq")["QueueUrl"]
    monkeypatch.setattr(
        load_handler.processor, "dead_letters", DeadLetterQueue(url, "item-load", sqs)
    )
    return url


def dead_letters(sqs, url: str) -> list[dict]:
    """Everything on the queue: body and string attributes."""
    found = []
    while msgs := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for m in msgs:
            attributes = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
            found.append({"body": m["Body"], **attributes})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return found


def test_unparsable_and_invalid_records_are_dead_lettered_at_once(
    with_collection, load, sqs, dlq_url
):
    # GIVEN a body that is not JSON (with a message attribute), an item without datetime,
    # and a good item
    not_json = sqs_record("{not json", message_id="not-json")
    not_json["messageAttributes"] = {
        "request_id": {"stringValue": "req-7", "dataType": "String"},
        "error": {"stringValue": "an old reason", "dataType": "String"},
    }
    undated = {**item("undated"), "properties": {"platform": "x"}}
    invalid = sqs_record(sns_envelope(undated), message_id="no-datetime")
    good = sqs_record(sns_envelope(item("fine")), message_id="good")
    # WHEN ONE invocation handles them
    response = load([not_json, invalid, good])
    # THEN nothing is left for SQS to retry, the good item landed
    assert response == {"batchItemFailures": []}
    assert with_collection.item_ids(COLL) == ["fine"]
    # AND both bad records are on the DLQ, bodies unchanged, with the reason and the stage
    letters = {d["body"]: d for d in dead_letters(sqs, dlq_url)}
    assert set(letters) == {"{not json", invalid["body"]}
    assert letters["{not json"]["stage"] == "item-load"
    assert letters["{not json"]["request_id"] == "req-7"
    assert "not valid JSON" in letters["{not json"]["error"]
    assert "no datetime" in letters[invalid["body"]]["error"]
    assert letters[invalid["body"]]["stage"] == "item-load"


def test_pgstac_refusal_is_dead_lettered(with_collection, load, sqs, dlq_url):
    refused = {**item("bad"), "private": {"note": "nul\u0000"}}  # jsonb refuses it in the COPY
    bad = sqs_record(sns_envelope(refused), message_id="nul-private")
    assert load([bad]) == {"batchItemFailures": []}
    [letter] = dead_letters(sqs, dlq_url)
    assert letter["body"] == bad["body"]
    assert "unsupported Unicode escape sequence" in letter["error"]


def test_dead_letter_send_failure_leaves_the_record_to_sqs(with_collection, load, sqs, monkeypatch):
    # GIVEN a DLQ url naming a queue that does not exist
    missing = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-dlq"
    monkeypatch.setattr(
        load_handler.processor, "dead_letters", DeadLetterQueue(missing, "item-load", sqs)
    )
    bad = sqs_record("{not json", message_id="not-json")
    # WHEN a permanent failure cannot be sent
    response = load([bad, sqs_record(sns_envelope(item("fine")))])
    # THEN it is reported as a batch item failure: SQS retries it, nothing is dropped
    assert response == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}


def test_without_dead_letter_queue_url_permanent_failures_retry(with_collection, load, monkeypatch):
    monkeypatch.setattr(load_handler.processor, "dead_letters", DeadLetterQueue(None, "item-load"))
    bad = sqs_record("{not json", message_id="not-json")
    assert load([bad]) == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}


def test_unknown_collection_and_outages_are_retried_not_dead_lettered(
    with_collection, load, sqs, dlq_url, monkeypatch
):
    # GIVEN an item of a collection that may still be on its way
    orphan = sqs_record(sns_envelope(item("o", "coming-soon")), message_id="orphan")
    assert load([orphan]) == {"batchItemFailures": [{"itemIdentifier": "orphan"}]}
    # AND a batch while the database is down
    monkeypatch.setenv("PGPORT", "1")
    load_handler.connections.discard()
    down = sqs_record(sns_envelope(item("d")), message_id="down")
    assert load([down]) == {"batchItemFailures": [{"itemIdentifier": "down"}]}
    # THEN neither went to the DLQ
    assert dead_letters(sqs, dlq_url) == []


def test_dead_letter_attributes_fit_sqs_limits(sqs):
    dlq_url = sqs.create_queue(QueueName="limits-dlq")["QueueUrl"]
    # GIVEN a reason of 100 KB with characters SQS refuses, and 12 attributes of its own
    record = sqs_record("{}", message_id="m1")
    record["messageAttributes"] = {
        f"a{n:02d}": {"stringValue": str(n), "dataType": "String"} for n in range(12)
    }
    record["messageAttributes"]["blob"] = {"binaryValue": "AAEC", "dataType": "Binary"}
    reason = "bad\x00\x01" + "x" * 100_000
    from ingest_common.dead_letter import DeadLetter

    # WHEN it is sent
    sent = DeadLetterQueue(dlq_url, "item-load", sqs).send([DeadLetter(record, reason)])
    # THEN SQS accepts it: 10 attributes, error and stage among them, the reason cut short
    assert sent == {"m1"}
    [m] = sqs.receive_message(QueueUrl=dlq_url, MessageAttributeNames=["All"])["Messages"]
    attributes = m["MessageAttributes"]
    assert len(attributes) == 10
    assert attributes["stage"]["StringValue"] == "item-load"
    error = attributes["error"]["StringValue"]
    assert error.startswith("bad\ufffd\ufffdxxx") and error.endswith("…") and len(error) == 4096


def test_a_message_with_any_permanent_failure_is_dead_lettered(with_collection, load, sqs, dlq_url):
    # GIVEN one message holding an item of a collection not loaded yet (retry would be right
    # alone) and an item pgstac refuses (it can never load, so neither can the message)
    fc = {
        "type": "FeatureCollection",
        "features": [item("early", "not-yet"), {**item("x"), "private": {"n": "\u0000"}}],
    }
    rec = sqs_record(sns_envelope(fc), message_id="mixed")
    # WHEN it is handled
    assert load([rec]) == {"batchItemFailures": []}
    # THEN it is dead-lettered at once, with the permanent reason
    [letter] = dead_letters(sqs, dlq_url)
    assert letter["body"] == rec["body"]
    assert "unsupported Unicode escape sequence" in letter["error"]


def test_refused_and_missing_hrefs_are_dead_lettered_unavailable_ones_retry(
    with_collection, load, sqs, dlq_url, monkeypatch
):
    from hrefserver import serving

    from item_load.fetch import HrefFetcher, HrefPolicy

    policy = HrefPolicy(schemes=frozenset({"s3", "https", "http"}), allow_private_hosts=True)
    monkeypatch.setattr(load_handler, "fetcher", HrefFetcher(policy))
    with serving() as base:
        # GIVEN a refused href, a missing document, a server that is busy, and a good item
        refused = sqs_record(sns_envelope({"href": "file:///proc/self/environ"}))
        missing = sqs_record(sns_envelope({"href": f"{base}/missing.json"}))
        busy = sqs_record(sns_envelope({"href": f"{base}/busy"}))
        good = sqs_record(sns_envelope(item("ok")))
        # WHEN the batch is handled
        response = load([refused, missing, busy, good])
    # THEN only the busy one is left to SQS; the two that can never succeed are dead-lettered
    assert failed_ids(response) == {busy["messageId"]}
    assert with_collection.item_ids(COLL) == ["ok"]
    letters = {d["body"]: d["error"] for d in dead_letters(sqs, dlq_url)}
    assert letters == {
        refused["body"]: "file:///proc/self/environ: scheme 'file' is not allowed "
        "(HREF_SCHEMES=http,https,s3); nothing was read",
        missing["body"]: f"{base}/missing.json: HTTP 404",
    }
