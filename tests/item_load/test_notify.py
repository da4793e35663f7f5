"""Post-ingest notifications: ItemLoad announces each item it created or changed, once committed."""

from __future__ import annotations

import json

import boto3
import pytest
from factories import COLL, MONTHLY, collection, failed_ids, item, sns_envelope, sqs_record
from moto import mock_aws

from item_load import handler as load_handler
from item_load.notify import SnsNotifier


class Subscriber:
    """A queue subscribed to the post-ingest topic (raw delivery), optionally filtered."""

    def __init__(self, sns, sqs, topic: str, name: str, policy: dict | None = None) -> None:
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        attributes = {"RawMessageDelivery": "true"}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes=attributes,
        )

    def received(self) -> list[dict]:
        """Every notification so far: the body, and the attributes under ``_attributes``."""
        out = []
        while msgs := self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for m in msgs:
                body = json.loads(m["Body"])
                body["_attributes"] = {
                    k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()
                }
                out.append(body)
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return out


@pytest.fixture
def topic(aws_env, monkeypatch):
    """The post-ingest topic (moto), wired into the real handler's processor."""
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        arn = sns.create_topic(Name="post-ingest")["TopicArn"]
        monkeypatch.setattr(load_handler.processor, "notifier", SnsNotifier(arn, sns))
        yield sns, sqs, arn


@pytest.fixture
def everything(topic):
    sns, sqs, arn = topic
    return Subscriber(sns, sqs, arn, "everything")


def by_id(notes: list[dict]) -> dict[str, dict]:
    return {n["id"]: n for n in notes}


def test_new_items_are_announced_as_created_with_their_request(with_collection, load, everything):
    records = [
        sqs_record(sns_envelope(item(f"i{n}"), attributes={"request_id": f"r{n}"}))
        for n in range(3)
    ]
    assert failed_ids(load(records)) == set()
    notes = by_id(everything.received())
    assert set(notes) == {"i0", "i1", "i2"}
    assert notes["i1"] == {
        "action": "created",
        "collection": COLL,
        "id": "i1",
        "request_id": "r1",
        "datetime": "2020-06-01T00:00:00Z",
        "_attributes": {"collection": COLL, "action": "created"},
    }


def test_an_unchanged_item_says_nothing_and_a_changed_one_says_updated(
    with_collection, load, everything
):
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("a"))), sqs_record(sns_envelope(item("b")))]))
        == set()
    )
    everything.received()
    # WHEN "a" comes again unchanged and "b" with a new property
    changed = item("b")
    changed["properties"]["platform"] = "other"
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("a"))), sqs_record(sns_envelope(changed))]))
        == set()
    )
    # THEN only "b" is announced, as updated
    notes = everything.received()
    assert [(n["id"], n["action"]) for n in notes] == [("b", "updated")]


def test_an_item_moved_to_another_partition_is_an_update(monthly, load, everything):
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("m", MONTHLY, dt="2020-01-05T00:00:00Z")))]))
        == set()
    )
    everything.received()
    moved = item("m", MONTHLY, dt="2020-07-05T00:00:00Z")
    assert failed_ids(load([sqs_record(sns_envelope(moved))])) == set()
    [note] = everything.received()
    assert (note["action"], note["datetime"]) == ("updated", "2020-07-05T00:00:00Z")
    assert monthly.item_ids(MONTHLY) == ["m"]


def test_only_what_landed_is_announced(with_collection, load, everything):
    undated = {**item("bad"), "properties": {}}
    records = [sqs_record(sns_envelope(item("good"))), sqs_record(sns_envelope(undated))]
    assert len(failed_ids(load(records))) == 1
    assert [n["id"] for n in everything.received()] == ["good"]


def test_subscribers_filter_by_collection(pgstac, load, topic):
    sns, sqs, arn = topic
    only_b = Subscriber(sns, sqs, arn, "only-b", {"collection": ["b"]})
    records = [sqs_record(sns_envelope(collection(c))) for c in ("a", "b")]
    records += [sqs_record(sns_envelope(item(f"{c}1", c))) for c in ("a", "b")]
    assert failed_ids(load(records)) == set()
    assert [(n["collection"], n["id"]) for n in only_b.received()] == [("b", "b1")]


def test_a_failed_publish_never_fails_or_unloads_the_batch(with_collection, load, topic, caplog):
    sns, _, arn = topic
    sns.delete_topic(TopicArn=arn)  # every publish now fails
    load_handler.processor.notifier.attempts = 1
    assert failed_ids(load([sqs_record(sns_envelope(item("kept")))])) == set()
    assert with_collection.item_ids(COLL) == ["kept"]
    assert any("not published" in r.getMessage() for r in caplog.records)


def test_without_a_topic_nothing_is_collected(with_collection, load):
    assert load_handler.processor.notifier is None  # POST_INGEST_TOPIC_ARN unset in tests
    assert failed_ids(load([sqs_record(sns_envelope(item("quiet")))])) == set()
    assert load_handler.processor.batch_loader.writer.changes == []
