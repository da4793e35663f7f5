"""The ingest API Lambda as API Gateway's HTTP API invokes it: SNS from moto, the real pgstac."""

from __future__ import annotations

import base64
import functools
import json

import boto3
import pytest
from factories import (
    COLL,
    ByteLimitedSns,
    LambdaContext,
    collection,
    item,
    sns_envelope,
    sqs_event,
    sqs_record,
)
from moto import mock_aws

from ingest_api import handler as api
from item_load import handler as load_handler


def http_event(method: str, path: str, body=None, query=None, b64: bool = False) -> dict:
    """An API Gateway HTTP API (payload 2.0) event, as IAM-authorized requests arrive."""
    text = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    if text is not None and b64:
        text = base64.b64encode(text.encode()).decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "queryStringParameters": query,
        "headers": {"content-type": "application/json", "host": "abc.execute-api.aws"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
            },
            "authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:user/ops"}},
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
            "time": "07/Dec/2026:07:00:00 +0000",
            "timeEpoch": 1796626800000,
        },
        "body": text,
        "isBase64Encoded": b64,
    }


def call(method: str, path: str, body=None, query=None, b64: bool = False) -> tuple[int, dict]:
    response = api.handler(http_event(method, path, body, query, b64), LambdaContext())
    return response["statusCode"], json.loads(response["body"])


class Topics:
    """Both stages' topics and queues, subscribed raw as the stack subscribes them by default."""

    def __init__(self, sns, sqs, raw: bool = True) -> None:
        self.sqs = sqs
        self.arns, self.queues = {}, {}
        for stage in ("gen", "load"):
            self.arns[stage] = sns.create_topic(Name=f"{stage}-topic")["TopicArn"]
            url = sqs.create_queue(QueueName=f"{stage}-queue")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            sns.subscribe(
                TopicArn=self.arns[stage],
                Protocol="sqs",
                Endpoint=arn["Attributes"]["QueueArn"],
                Attributes={"RawMessageDelivery": "true" if raw else "false"},
            )
            self.queues[stage] = url

    def received(self, stage: str) -> list[dict]:
        """Every message on a stage's queue, as Lambda's event source mapping would hand it
        over (``messageAttributes`` spelt Lambda's way), in the order SQS gave them."""
        out = []
        while msgs := self.sqs.receive_message(
            QueueUrl=self.queues[stage], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for m in msgs:
                record = sqs_record(m["Body"], message_id=m["MessageId"])
                record["messageAttributes"] = {
                    name: {"stringValue": a["StringValue"], "dataType": a["DataType"]}
                    for name, a in m.get("MessageAttributes", {}).items()
                }
                out.append(record)
                self.sqs.delete_message(
                    QueueUrl=self.queues[stage], ReceiptHandle=m["ReceiptHandle"]
                )
        return out

    def bodies(self, stage: str) -> list[str]:
        return [r["body"] for r in self.received(stage)]


@pytest.fixture
def topics(aws_env, monkeypatch, pgstac):
    with mock_aws():
        t = Topics(boto3.client("sns"), boto3.client("sqs"))
        monkeypatch.setattr(api.settings, "item_gen_topic_arn", t.arns["gen"])
        monkeypatch.setattr(api.settings, "item_load_topic_arn", t.arns["load"])
        api.publisher.cache_clear()
        api.connections.discard()
        yield t
        api.publisher.cache_clear()
        api.connections.discard()


REQUEST = {
    "package_name": "stactools-x==1.0",
    "group_name": "x",
    "create_item_args": ["s3://b/a.tif"],
    "request_id": "mine-1",
}


def test_a_post_publishes_each_object_to_its_stage_and_answers_their_ids(topics, pgstac):
    status, body = call("POST", "/ingest/requests", [REQUEST, collection(COLL), item("a")])
    assert status == 202, body
    ids = body["request_ids"]
    # the request keeps its own id; the documents get ids the API made
    assert ids[0] == "mine-1"
    assert len(set(ids)) == 3 and all(i.startswith("req-") for i in ids[1:])
    gen = topics.received("gen")
    load = topics.received("load")
    assert [json.loads(r["body"]) for r in gen] == [REQUEST]
    assert gen[0]["messageAttributes"]["request_id"]["stringValue"] == "mine-1"
    # WHEN ItemLoad loads the documents as the stack delivers them (raw, SQS message ids that
    # nobody was told), the API answers for them by the ids it gave
    assert all(r["messageId"] not in ids for r in load)
    load_handler.connections.discard()
    assert load_handler.handler(sqs_event(load), LambdaContext())["batchItemFailures"] == []
    load_handler.connections.discard()
    status, row = call("GET", f"/ingest/requests/{ids[2]}")
    assert status == 200
    assert (row["state"], row["items"]) == ("loaded", [{"collection": COLL, "id": "a"}])
    assert call("GET", f"/ingest/requests/{ids[1]}")[1]["state"] == "loaded"


def test_ids_reach_the_ledger_through_wrapped_deliveries_too(aws_env, monkeypatch, pgstac):
    with mock_aws():
        t = Topics(boto3.client("sns"), boto3.client("sqs"), raw=False)
        monkeypatch.setattr(api.settings, "item_gen_topic_arn", t.arns["gen"])
        monkeypatch.setattr(api.settings, "item_load_topic_arn", t.arns["load"])
        api.publisher.cache_clear()
        try:
            status, body = call("POST", "/ingest/requests", [collection(COLL), item("w")])
        finally:
            api.publisher.cache_clear()
        assert status == 202
        load_handler.connections.discard()
        load_handler.handler(sqs_event(t.received("load")), LambdaContext())
        load_handler.connections.discard()
        api.connections.discard()
        row = call("GET", f"/ingest/requests/{body['request_ids'][1]}")[1]
        assert (row["state"], row["items"]) == ("loaded", [{"collection": COLL, "id": "w"}])


def test_many_requests_are_published_in_batches_within_sns_byte_limit(topics, monkeypatch):
    sns = ByteLimitedSns(boto3.client("sns"))
    limited = api.TopicPublisher(
        {"gen": topics.arns["gen"], "load": topics.arns["load"]}, sns, None
    )
    monkeypatch.setattr(api, "publisher", functools.cache(lambda: limited))
    # 30 requests of ~40 KiB each: ten would be 400 KiB, over one PublishBatch's 256 KiB
    big = [
        {**REQUEST, "request_id": f"big-{n}", "create_item_args": ["s3://b/a.tif", "x" * 40_000]}
        for n in range(30)
    ]
    status, body = call("POST", "/ingest/requests", big)
    assert status == 202, body
    assert body["request_ids"] == [f"big-{n}" for n in range(30)]
    assert sorted(json.loads(b)["request_id"] for b in topics.bodies("gen")) == sorted(
        body["request_ids"]
    )


class RefusesFirstEntryOnce:
    """SNS throttling one entry of a call (the call itself succeeds), once."""

    def __init__(self, sns) -> None:
        self.sns, self.refused = sns, False

    def publish_batch(self, **kwargs):
        entries = kwargs["PublishBatchRequestEntries"]
        if self.refused:
            return self.sns.publish_batch(**kwargs)
        self.refused = True
        response = self.sns.publish_batch(**{**kwargs, "PublishBatchRequestEntries": entries[1:]})
        response["Failed"] = [
            {"Id": entries[0]["Id"], "Code": "Throttling", "Message": "Rate exceeded"}
        ]
        return response


def test_a_refused_document_is_reported_not_resent_behind_a_newer_copy(topics, monkeypatch):
    sns = RefusesFirstEntryOnce(boto3.client("sns"))
    refusing = api.TopicPublisher(
        {"gen": topics.arns["gen"], "load": topics.arns["load"]}, sns, None
    )
    monkeypatch.setattr(api, "publisher", functools.cache(lambda: refusing))
    older = item("a")
    newer = {**item("a"), "properties": {**item("a")["properties"], "version": 2}}
    status, body = call("POST", "/ingest/requests", [older, newer])
    # THEN the older copy is reported for the caller to post again, and never sent after
    # the newer one (which ItemLoad would then take for the newest)
    assert status == 502
    assert [e["index"] for e in body["errors"]] == [0] and body["request_ids"][0] is None
    assert [json.loads(b)["properties"].get("version") for b in topics.bodies("load")] == [2]


def test_too_many_objects_for_one_call_are_400_pointing_at_submit(topics):
    status, body = call("POST", "/ingest/requests", [REQUEST] * 2001)
    assert status == 400 and "submit" in body["detail"]


def test_bad_bodies_are_400_or_422_and_nothing_is_published(topics):
    assert call("POST", "/ingest/requests", "{nope")[0] == 400
    status, body = call("POST", "/ingest/requests", [item("ok"), {**item("u"), "properties": {}}])
    assert status == 422
    assert body["detail"][0]["index"] == 1 and "datetime" in body["detail"][0]["reason"]
    status, body = call("POST", "/ingest/requests", [{"package_name": "x", "group_name": "a b"}])
    assert status == 422 and "group_name" in body["detail"][0]["reason"]
    assert call("POST", "/ingest/requests", [])[0] == 422
    assert topics.bodies("gen") == [] and topics.bodies("load") == []


def test_a_base64_body_is_read_as_api_gateway_sends_it(topics):
    status, body = call("POST", "/ingest/requests", REQUEST, b64=True)
    assert (status, body["request_ids"]) == (202, ["mine-1"])


def test_reads_answer_from_the_ledger_a_page_at_a_time(topics, pgstac):
    load_handler.connections.discard()
    records = [
        sqs_record(sns_envelope(d, attributes={"request_id": f"r{n}"}))
        for n, d in enumerate([collection(COLL), item("a"), item("b"), item("c")])
    ]
    load_handler.handler(sqs_event(records), LambdaContext())
    load_handler.connections.discard()
    seen, token = [], None
    while True:
        query = {"limit": "3", **({"token": token} if token else {})}
        status, page = call("GET", "/ingest/requests", query=query)
        assert status == 200
        seen += [r["request_id"] for r in page["requests"]]
        token = page["next_token"]
        if not token:
            break
        assert page["next"].startswith(
            "https://abc.execute-api.us-east-1.amazonaws.com/ingest/requests?"
        )
    assert sorted(seen) == ["r0", "r1", "r2", "r3"]
    assert call("GET", "/ingest/requests/nope")[0] == 404
    assert call("GET", "/ingest/requests", query={"state": "exploded"})[0] == 422
    assert call("GET", "/ingest/requests", query={"since": "yesterday"})[0] == 422
    assert call("GET", "/ingest/requests", query={"token": "junk"})[0] == 422
    status, loaded = call("GET", "/ingest/requests", query={"state": "loaded", "since": "1h"})
    assert status == 200 and len(loaded["requests"]) == 4


def test_a_database_that_cannot_be_reached_is_503(topics, monkeypatch):
    import socket

    from item_load.db import ConnectionCache
    from item_load.settings import LoadSettings

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(api, "connections", ConnectionCache(LoadSettings(), port=port))
    status, body = call("GET", "/ingest/requests/x")
    assert status == 503 and "try again" in body["detail"]


def test_nul_in_an_id_or_a_filter_is_an_answer_not_a_crash(topics, pgstac):
    assert call("GET", "/ingest/requests/a%00b")[0] == 404
    for name in ("collection", "submission", "state", "token"):
        status, body = call("GET", "/ingest/requests", query={name: "a\x00b"})
        assert status == 422 and "NUL" in body["detail"], (name, body)
    status, body = call("GET", "/ingest/counts", query={"collection": "a\x00b"})
    assert status == 422 and "NUL" in body["detail"]
