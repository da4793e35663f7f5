"""ItemGen sends requests that can never succeed straight to its DLQ; transient ones retry."""

from __future__ import annotations

import json

import boto3
import pytest
from factories import LambdaContext, item, sqs_event, sqs_record
from moto import mock_aws

from ingest_common.dead_letter import DeadLetterQueue
from item_gen import handler as gen_handler
from item_gen.errors import PackageFailed, RequestTimedOut

REQUEST = {"package_name": "stactools-x", "group_name": "x", "create_item_args": ["a.tif"]}


@pytest.fixture
def aws(aws_env, monkeypatch):
    """moto SNS/SQS: the ItemLoad topic, and ItemGen's DLQ wired into the processor."""
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        arn = sns.create_topic(Name="item-load")["TopicArn"]
        dlq = sqs.create_queue(QueueName="item-gen-dlq")["QueueUrl"]
        monkeypatch.setattr(gen_handler.settings, "item_load_topic_arn", arn)
        monkeypatch.setattr(
            gen_handler.processor, "dead_letters", DeadLetterQueue(dlq, "item-gen", sqs)
        )
        gen_handler.publisher.cache_clear()
        yield sqs, dlq
        gen_handler.publisher.cache_clear()


def runner(result):
    """A stand-in for the stactools runner: returns ``result`` or raises it."""

    def run(request, settings):
        if isinstance(result, BaseException):
            raise result
        return result

    return lambda settings: run


def dead_letters(sqs, url: str) -> list[dict]:
    msgs = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return [
        {"body": m["Body"], **{k: v["StringValue"] for k, v in m["MessageAttributes"].items()}}
        for m in msgs
    ]


def run_gen(records: list[dict]) -> dict:
    return gen_handler.handler(sqs_event(records), LambdaContext())


def test_unparsable_and_invalid_requests_are_dead_lettered_at_once(aws, monkeypatch):
    sqs, dlq = aws
    ran = []
    monkeypatch.setattr(gen_handler, "runner_for", lambda s: lambda r, st: ran.append(r))
    not_json = sqs_record("{nope", message_id="not-json")
    invalid = sqs_record(json.dumps({"package_name": "x"}), message_id="no-group")
    # WHEN one invocation handles them
    response = run_gen([not_json, invalid])
    # THEN neither is left to SQS, no package ran, and both are on the DLQ with reasons
    assert response == {"batchItemFailures": []}
    assert ran == []
    letters = {d["body"]: d for d in dead_letters(sqs, dlq)}
    assert set(letters) == {"{nope", invalid["body"]}
    assert "not valid JSON" in letters["{nope"]["error"]
    assert "group_name" in letters[invalid["body"]]["error"]
    assert {d["stage"] for d in letters.values()} == {"item-gen"}


def test_package_failure_is_dead_lettered(aws, monkeypatch):
    sqs, dlq = aws
    monkeypatch.setattr(
        gen_handler, "runner_for", runner(PackageFailed("stac x create-item exited 2: no file"))
    )
    rec = sqs_record(json.dumps(REQUEST), message_id="pkg")
    assert run_gen([rec]) == {"batchItemFailures": []}
    [letter] = dead_letters(sqs, dlq)
    assert letter["body"] == rec["body"] and "exited 2" in letter["error"]


def test_timeouts_and_publish_failures_are_retried_not_dead_lettered(aws, monkeypatch):
    sqs, dlq = aws
    # a timeout may be the source's or the host's (slow S3, a busy machine): SQS retries it
    monkeypatch.setattr(gen_handler, "runner_for", runner(RequestTimedOut("ran past 300 s")))
    slow = sqs_record(json.dumps(REQUEST), message_id="slow")
    assert run_gen([slow]) == {"batchItemFailures": [{"itemIdentifier": "slow"}]}
    # a publish that SNS refuses (topic gone) is trouble outside the request
    monkeypatch.setattr(gen_handler, "runner_for", runner(item("i1")))
    monkeypatch.setattr(
        gen_handler.settings, "item_load_topic_arn", "arn:aws:sns:us-east-1:123456789012:gone"
    )
    gen_handler.publisher.cache_clear()
    unpublished = sqs_record(json.dumps(REQUEST), message_id="unpublished")
    assert run_gen([unpublished]) == {"batchItemFailures": [{"itemIdentifier": "unpublished"}]}
    assert dead_letters(sqs, dlq) == []


def test_dead_letter_send_failure_leaves_the_request_to_sqs(aws, monkeypatch):
    sqs, _ = aws
    missing = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-dlq"
    monkeypatch.setattr(
        gen_handler.processor, "dead_letters", DeadLetterQueue(missing, "item-gen", sqs)
    )
    rec = sqs_record("{nope", message_id="not-json")
    assert run_gen([rec]) == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}


def test_dead_lettered_and_retried_requests_are_reported_to_the_ledger(aws, monkeypatch):
    # GIVEN the load topic with a queue subscribed (raw delivery), to read what ItemGen reports
    sqs, _ = aws
    sns = boto3.client("sns")
    reports_url = sqs.create_queue(QueueName="reports")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=reports_url, AttributeNames=["QueueArn"])
    sns.subscribe(
        TopicArn=gen_handler.settings.item_load_topic_arn,
        Protocol="sqs",
        Endpoint=arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    monkeypatch.setattr(
        gen_handler, "runner_for", runner(RequestTimedOut("stac x create-item ran 300 s"))
    )
    # a request that can never succeed (raw delivery: known by its SQS message id), one that
    # timed out on its second receive, and one that timed out on its last (fifth) receive
    never = sqs_record("{nope", message_id="never")
    again = sqs_record(json.dumps({**REQUEST, "request_id": "again"}), message_id="m2")
    again["attributes"]["ApproximateReceiveCount"] = "2"
    last = sqs_record(json.dumps({**REQUEST, "request_id": "last"}), message_id="m3")
    last["attributes"]["ApproximateReceiveCount"] = "5"
    assert failed_ids_of(run_gen([never, again, last])) == {"m2", "m3"}
    got = sqs.receive_message(QueueUrl=reports_url, MaxNumberOfMessages=10)["Messages"]
    reports = {r["request_id"]: r for r in (json.loads(m["Body"]) for m in got)}
    # THEN each is reported with what happened to it and why
    assert reports["never"]["state"] == "dead_lettered"
    assert "not valid JSON" in reports["never"]["error"]
    assert (reports["again"]["state"], reports["again"]["attempts"]) == ("failed", 2)
    assert "ran 300 s" in reports["again"]["error"]
    assert reports["last"]["state"] == "dead_lettered"
    assert "all 5 receives" in reports["last"]["error"]
    assert {r["stage"] for r in reports.values()} == {"item-gen"}


def failed_ids_of(response: dict) -> set[str]:
    return {f["itemIdentifier"] for f in response["batchItemFailures"]}
