"""ItemGen handler with a real stactools package (run through uvx) and SNS/SQS/S3 from moto."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import boto3
import pytest
from factories import LambdaContext, failed_ids, sns_envelope, sqs_event, sqs_record
from geotiffs import GLAD_COLLECTION, glad_collection_request, glad_item_request, glad_tiles
from moto import mock_aws

from ingest_common.ledger import is_status_report
from item_gen import handler as gen_handler
from item_gen.errors import PayloadTooLarge, PublishFailed
from item_gen.publish import SNS_MAX_BYTES, Publisher
from item_load import handler as load_handler


@dataclass
class LoadTopic:
    """The ItemLoad topic with a queue subscribed, so we read what ItemGen published."""

    arn: str
    queue_url: str
    sqs: object

    def received(self) -> list[dict]:
        """Drain the queue into Lambda-shaped SQS records (SNS envelopes, as AWS delivers)."""
        records = []
        while True:
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            )
            msgs = resp.get("Messages", [])
            if not msgs:
                return records
            for m in msgs:
                records.append(
                    sqs_record(m["Body"], m["MessageId"], int(m["Attributes"]["SentTimestamp"]))
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def everything(self) -> list[dict]:
        """Every message published: documents and the ledger's status reports."""
        return [json.loads(json.loads(r["body"])["Message"]) for r in self.received()]

    def messages(self) -> list[dict]:
        """The documents published (status reports left out)."""
        return [m for m in self.everything() if not is_status_report(m)]


@pytest.fixture
def load_topic(aws_env):
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        arn = sns.create_topic(Name="item-load")["TopicArn"]
        url = sqs.create_queue(QueueName="item-load-queue")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
        gen_handler.settings.item_load_topic_arn = arn
        gen_handler.publisher.cache_clear()
        yield LoadTopic(arn, url, sqs)
        gen_handler.publisher.cache_clear()


def run_gen(records: list[dict]) -> dict:
    return gen_handler.handler(sqs_event(records), LambdaContext())


def test_item_request_publishes_the_real_packages_item(load_topic, tmp_path):
    # GIVEN a tile on disk and an original-format item request for it (SNS-wrapped)
    tif = glad_tiles(tmp_path)[0]
    request = glad_item_request(tif, tmp_path)
    # WHEN ItemGen handles it
    response = run_gen([sqs_record(sns_envelope(request, topic="item-gen"))])
    # THEN the package's item is on the load topic
    assert response == {"batchItemFailures": []}
    [published] = load_topic.messages()
    assert published["type"] == "Feature"
    assert published["id"] == "2020_50N_010E"
    assert published["collection"] == GLAD_COLLECTION
    assert published["bbox"] == [10.0, 40.0, 20.0, 50.0]
    assert published["assets"]["data"]["href"] == str(tif)


def test_collection_request_with_override_and_raw_delivery(load_topic):
    request = glad_collection_request(collection_id="my-glad")
    assert failed_ids(run_gen([sqs_record(json.dumps(request))])) == set()
    [published] = load_topic.messages()
    assert published["type"] == "Collection"
    assert published["id"] == "my-glad"
    # links into the temporary output directory do not travel with the collection
    assert not [link for link in published["links"] if "stactools-ingest-" in link["href"]]


def test_bad_requests_fail_alone_with_reasons(load_topic, tmp_path, caplog):
    tif = glad_tiles(tmp_path)[0]
    good = sqs_record(sns_envelope(glad_item_request(tif, tmp_path)))
    not_json = sqs_record("{nope", message_id="not-json")
    missing_field = sqs_record(json.dumps({"package_name": "x"}), message_id="missing-group")
    missing_file = sqs_record(
        json.dumps(glad_item_request(tmp_path / "2020" / "40N_000E.tif", tmp_path)),
        message_id="missing-file",
    )
    response = run_gen([not_json, good, missing_field, missing_file])
    assert failed_ids(response) == {"not-json", "missing-group", "missing-file"}
    assert [m["id"] for m in load_topic.messages()] == ["2020_50N_010E"]
    reasons = {r.message_id: r.reason for r in caplog.records if hasattr(r, "reason")}
    assert "not valid JSON" in reasons["not-json"]
    assert "group_name" in reasons["missing-group"]
    # a failing package names the command and shows the end of its stderr
    assert "stac gladglclu2020 create-item" in reasons["missing-file"]
    assert "40N_000E.tif" in reasons["missing-file"]


def test_unknown_package_fails_with_the_command_and_stderr(load_topic, caplog):
    request = {
        "package_name": "stactools-package-that-does-not-exist-0xdeadbeef",
        "group_name": "nothing",
        "create_item_args": ["x"],
    }
    rec = sqs_record(json.dumps(request), message_id="unknown-package")
    assert failed_ids(run_gen([rec])) == {"unknown-package"}
    reason = next(
        r.reason for r in caplog.records if getattr(r, "message_id", None) == "unknown-package"
    )
    assert "uvx --with stactools-package-that-does-not-exist-0xdeadbeef" in reason
    assert "exited" in reason


def test_request_timeout_kills_the_command(load_topic, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(gen_handler.settings, "request_timeout_seconds", 0.01)
    # A warm worker answers in about 10 ms, so make the package hang for real: opening a FIFO
    # that nobody writes to blocks until the process is killed.
    tif = tmp_path / "2020" / "50N_010E.tif"
    tif.parent.mkdir(parents=True)
    os.mkfifo(tif)
    rec = sqs_record(json.dumps(glad_item_request(tif, tmp_path)), message_id="slow")
    assert failed_ids(run_gen([rec])) == {"slow"}
    reason = next(r.reason for r in caplog.records if getattr(r, "message_id", None) == "slow")
    assert "ran longer than" in reason
    assert load_topic.messages() == []


def _big_item() -> dict:
    return {
        "type": "Feature",
        "id": "huge",
        "collection": "c",
        "properties": {"datetime": "2020-01-01T00:00:00Z", "blob": "x" * (SNS_MAX_BYTES + 10)},
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "links": [],
        "assets": {},
    }


def test_oversized_item_goes_through_the_payload_bucket(load_topic):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="payloads")
    publisher = Publisher(load_topic.arn, "payloads", boto3.client("sns"), s3)
    publisher.publish(_big_item())
    [pointer] = load_topic.messages()
    assert pointer["href"].startswith("s3://payloads/payloads/c/huge-")
    key = pointer["href"].removeprefix("s3://payloads/")
    assert json.loads(s3.get_object(Bucket="payloads", Key=key)["Body"].read()) == _big_item()


def test_an_item_near_sns_limit_and_its_report_are_both_published(load_topic):
    from factories import ByteLimitedSns

    from ingest_common.ledger import status_report

    near = _big_item()
    near["properties"]["blob"] = "x" * (SNS_MAX_BYTES - 4000)
    items = [{"collection": "c", "id": f"huge-{n:04}"} for n in range(200)]
    report = status_report("r", "generated", stage="item-gen", generated=200, items=items)
    publisher = Publisher(load_topic.arn, None, ByteLimitedSns(boto3.client("sns")))
    publisher.publish(near, request_id="r", report=report)
    published = load_topic.everything()
    assert sorted(m.get("type") for m in published) == ["Feature", "stactools_ingest:status"]


def test_no_report_is_published_for_an_item_sns_refused(load_topic):
    from factories import ByteLimitedSns

    from ingest_common.ledger import status_report

    class RefusesTheItem(ByteLimitedSns):
        def publish_batch(self, **kwargs):
            entries = kwargs["PublishBatchRequestEntries"]
            kept = [e for e in entries if e["Id"] != "doc"]
            response = super().publish_batch(**{**kwargs, "PublishBatchRequestEntries": kept})
            if len(kept) < len(entries):
                response["Failed"] = [{"Id": "doc", "Code": "InternalError", "Message": "x"}]
            return response

    near = _big_item()
    near["properties"]["blob"] = "x" * (SNS_MAX_BYTES - 4000)
    items = [{"collection": "c", "id": f"huge-{n:04}"} for n in range(200)]
    report = status_report("r", "generated", stage="item-gen", generated=200, items=items)
    publisher = Publisher(load_topic.arn, None, RefusesTheItem(boto3.client("sns")))
    with pytest.raises(PublishFailed):
        publisher.publish(near, request_id="r", report=report)
    assert load_topic.everything() == []


def test_oversized_item_without_bucket_is_a_clear_error(load_topic):
    publisher = Publisher(load_topic.arn, None, boto3.client("sns"))
    with pytest.raises(PayloadTooLarge, match="PAYLOAD_BUCKET"):
        publisher.publish(_big_item())
    assert load_topic.messages() == []


def test_two_stages_requests_to_pgstac(load_topic, pgstac, tmp_path):
    # GIVEN a collection request and item requests for two tiles
    tifs = glad_tiles(tmp_path)
    records = [sqs_record(sns_envelope(glad_collection_request()))]
    records += [sqs_record(sns_envelope(glad_item_request(t, tmp_path))) for t in tifs]
    # WHEN ItemGen runs and its published messages are delivered to ItemLoad
    assert failed_ids(run_gen(records)) == set()
    delivered = load_topic.received()
    assert len(delivered) == 6  # three documents, and a "generated" report for each request
    load_handler.connections.discard()
    response = load_handler.handler(sqs_event(delivered), LambdaContext())
    # THEN the items are queryable in pgstac, with pgstac's own search
    assert response == {"batchItemFailures": []}
    with pgstac.connect() as conn:
        found = conn.execute(
            "SELECT search(%s::jsonb)",
            (json.dumps({"collections": [GLAD_COLLECTION], "bbox": [12, 42, 14, 44]}),),
        ).fetchone()[0]
    assert [f["id"] for f in found["features"]] == ["2020_50N_010E"]
    assert pgstac.item_ids(GLAD_COLLECTION) == ["2020_50N_010E", "2020_50N_020E"]
    load_handler.connections.discard()


def _load(records: list[dict]) -> dict:
    load_handler.connections.discard()
    try:
        return load_handler.handler(sqs_event(records), LambdaContext())
    finally:
        load_handler.connections.discard()


def test_a_request_id_travels_with_the_item_and_the_ledger_follows_it(load_topic, pgstac, tmp_path):
    from item_load import ledger

    # GIVEN a collection request and an item request that names its own request_id
    tif = glad_tiles(tmp_path)[0]
    request = {**glad_item_request(tif, tmp_path), "request_id": "tile-2020-50N-010E"}
    records = [sqs_record(sns_envelope(glad_collection_request(), message_id="coll-msg"))]
    records.append(sqs_record(sns_envelope(request, attributes={"submission_id": "sub-7"})))
    # WHEN ItemGen handles them
    assert failed_ids(run_gen(records)) == set()
    delivered = load_topic.received()
    # THEN the item carries the request id as the SNS message attribute request_id
    by_type = {}
    for r in delivered:
        envelope = json.loads(r["body"])
        by_type.setdefault(json.loads(envelope["Message"])["type"], []).append(envelope)
    [item_envelope] = by_type["Feature"]
    assert item_envelope["MessageAttributes"]["request_id"]["Value"] == "tile-2020-50N-010E"
    # (and the submission it came in, so `status --submission` counts it)
    assert item_envelope["MessageAttributes"]["submission_id"]["Value"] == "sub-7"
    # and ItemGen reported both requests generated; until ItemLoad runs, that is their state
    reports = [json.loads(e["Message"]) for e in by_type["stactools_ingest:status"]]
    assert sorted(r["request_id"] for r in reports) == ["coll-msg", "tile-2020-50N-010E"]
    assert failed_ids(_load([r for r in delivered if "status" in r["body"]])) == set()
    with pgstac.connect() as conn:
        assert ledger.get(conn, "tile-2020-50N-010E")["state"] == "generated"
    # WHEN ItemLoad loads the documents
    assert failed_ids(_load([r for r in delivered if "status" not in r["body"]])) == set()
    # THEN the ledger names the item under the sender's id, and the collection request under
    # the SNS MessageId of the message it came in (what `aws sns publish` prints)
    with pgstac.connect() as conn:
        got = ledger.get(conn, "tile-2020-50N-010E")
        coll = ledger.get(conn, "coll-msg")
    assert (got["state"], got["generated"], got["submission_id"]) == ("loaded", 1, "sub-7")
    assert got["items"] == [{"collection": GLAD_COLLECTION, "id": "2020_50N_010E"}]
    assert (coll["state"], coll["collection"]) == ("loaded", GLAD_COLLECTION)


def test_a_failed_request_is_reported_to_the_ledger(load_topic, pgstac):
    from item_load import ledger

    # GIVEN a request that is not valid (no DLQ configured: it stays with SQS's retries)
    bad = sqs_record(
        sns_envelope({"package_name": "x", "group_name": "two words", "request_id": "bad-1"})
    )
    bad["attributes"]["ApproximateReceiveCount"] = "3"
    assert failed_ids(run_gen([bad])) == {bad["messageId"]}
    # THEN ItemGen published no document, only a report that ItemLoad records
    [report] = load_topic.everything()
    assert report["state"] == "failed" and report["request_id"] == "bad-1"
    assert failed_ids(_load([sqs_record(sns_envelope(report))])) == set()
    with pgstac.connect() as conn:
        got = ledger.get(conn, "bad-1")
    assert (got["state"], got["stage"], got["attempts"]) == ("failed", "item-gen", 3)
    assert "group_name" in got["error"]
