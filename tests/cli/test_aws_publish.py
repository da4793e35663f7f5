"""``stactools_ingest.aws_publish`` against moto: routing inputs and publishing SNS batches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from factories import collection, item
from moto_stack import Wrapped

from ingest_common.envelope import SNS_MAX_BYTES
from ingest_common.errors import TransientError
from ingest_common.sns_batches import BatchPublisher, PublishAborted
from stactools_ingest.aws_publish import InvalidDocument, route, sns_client

REQUEST = {"package_name": "stactools-x", "group_name": "x", "create_item_args": ["a.tif"]}


def test_route_sends_requests_to_gen_and_stac_to_load():
    assert route(REQUEST) == [("gen", json.dumps(REQUEST, separators=(",", ":")))]
    collection_request = {"package_name": "p", "group_name": "g", "create_collection_args": []}
    assert route(collection_request)[0][0] == "gen"
    assert route(item("a", "c")) == [("load", json.dumps(item("a", "c"), separators=(",", ":")))]
    assert route(collection("c"))[0][0] == "load"
    assert route({"href": "s3://b/k.json"}) == [("load", '{"href":"s3://b/k.json"}')]


def test_route_rejects_what_would_only_dead_letter():
    with pytest.raises(InvalidDocument, match="invalid ItemRequest: create_item_args"):
        route({**REQUEST, "create_item_args": "a.tif"})
    with pytest.raises(InvalidDocument, match="item 'a' has no 'collection'"):
        route(item("a", None))
    with pytest.raises(
        InvalidDocument,
        match=r"^not an item or collection request, nor a load message: message is not a STAC "
        r"Item, Collection, Catalog, FeatureCollection, Delete, href pointer or S3 event "
        r"\(type=None\)$",
    ):
        route({"hello": "world"})
    with pytest.raises(InvalidDocument, match="message is a JSON int, not a STAC object"):
        route(3)


def test_route_splits_a_feature_collection_over_the_size_limit():
    features = [item(f"i{n}", "c", n_assets=400) for n in range(30)]  # ~40 KB each
    routed = route({"type": "FeatureCollection", "features": features})
    assert len(routed) > 1
    assert all(len(m.encode()) <= SNS_MAX_BYTES for _, m in routed)
    ids = [f["id"] for _, m in routed for f in json.loads(m)["features"]]
    assert ids == [f"i{n}" for n in range(30)]


def test_split_pieces_leave_room_for_the_attributes_sns_counts_too():
    from ingest_common.ledger import new_submission_id
    from ingest_common.sns_batches import attributes_size, string_attributes

    # features sized so that 100 of them fill a piece to SNS's last byte
    shell = len(json.dumps({"type": "FeatureCollection", "features": []}, separators=(",", ":")))
    target = (SNS_MAX_BYTES - shell) // 100 - 1

    def feature(n: int) -> dict:
        f = item(f"i{n:03}", "c")
        f["properties"]["pad"] = ""
        f["properties"]["pad"] = "x" * (target - len(json.dumps(f, separators=(",", ":"))))
        return f

    routed = route({"type": "FeatureCollection", "features": [feature(n) for n in range(300)]})
    attributes = string_attributes({"submission_id": new_submission_id(), "request_id": "r" * 40})
    assert all(len(m.encode()) + attributes_size(attributes) <= SNS_MAX_BYTES for _, m in routed)


def _counting(sns: Any, calls: list[int], **overrides: Any) -> Wrapped:
    def publish_batch(**kwargs):
        calls.append(len(kwargs["PublishBatchRequestEntries"]))
        return (overrides.get("publish_batch") or sns.publish_batch)(**kwargs)

    return Wrapped(sns, publish_batch=publish_batch)


def test_publisher_sends_batches_of_ten(deployed):
    calls: list[int] = []
    publisher = BatchPublisher(_counting(deployed.sns, calls))
    topic = deployed.outputs["ItemLoadTopicArn"]
    for n in range(25):
        publisher.add(topic, json.dumps({"n": n}), f"f:{n}")
    summary = publisher.close()
    assert calls == [10, 10, 5]
    assert (summary.published, summary.failed, summary.errors) == (25, 0, [])
    assert sorted(m["n"] for m in deployed.published("load")) == list(range(25))


def test_publisher_keeps_each_call_under_256_kib(deployed):
    calls: list[int] = []
    publisher = BatchPublisher(_counting(deployed.sns, calls))
    topic = deployed.outputs["ItemLoadTopicArn"]
    for n in range(3):
        publisher.add(topic, json.dumps({"n": n, "pad": "x" * 100_000}), f"f:{n}")
    publisher.add(topic, "y" * (SNS_MAX_BYTES + 1), "f:4")
    summary = publisher.close()
    assert calls == [2, 1]
    assert summary.published == 3
    assert summary.errors[0]["source"] == "f:4"
    assert "over SNS's 256 KiB limit" in summary.errors[0]["reason"]


def _throttled() -> ClientError:
    return ClientError(
        {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "PublishBatch"
    )


def test_whole_calls_are_retried_by_botocores_adaptive_mode(aws_env):
    assert sns_client().meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}


def test_publisher_retries_failed_entries(deployed):
    # GIVEN SNS fails entry 1 on its own side once
    script = iter(["fail-one"])
    sleeps: list[float] = []

    def publish_batch(**kwargs):
        entries = kwargs["PublishBatchRequestEntries"]
        if next(script, None) == "fail-one":
            ok = deployed.sns.publish_batch(
                TopicArn=kwargs["TopicArn"], PublishBatchRequestEntries=entries[:1] + entries[2:]
            )
            failed = [{"Id": entries[1]["Id"], "Code": "InternalError", "SenderFault": False}]
            return {"Successful": ok["Successful"], "Failed": failed}
        return deployed.sns.publish_batch(**kwargs)

    publisher = BatchPublisher(
        Wrapped(deployed.sns, publish_batch=publish_batch), sleep=sleeps.append
    )
    topic = deployed.outputs["ItemGenSNSTopicArn"]
    for n in range(3):
        publisher.add(topic, json.dumps({"n": n}), f"f:{n}")
    summary = publisher.close()
    # THEN everything arrives exactly once after one backoff
    assert (summary.published, summary.failed) == (3, 0)
    assert len(sleeps) == 1
    assert sorted(m["n"] for m in deployed.published("gen")) == [0, 1, 2]


def test_a_call_throttled_beyond_botocores_retries_fails_its_entries(deployed):
    # GIVEN SNS keeps throttling one topic's calls after botocore gave up
    def publish_batch(**kwargs):
        raise _throttled()

    sleeps: list[float] = []
    publisher = BatchPublisher(
        Wrapped(deployed.sns, publish_batch=publish_batch), sleep=sleeps.append
    )
    topic = deployed.outputs["ItemGenSNSTopicArn"]
    for n in range(2):
        publisher.add(topic, json.dumps({"n": n}), f"f:{n}")
    summary = publisher.close()
    # THEN its entries are reported by source, without a second layer of retries
    assert (summary.published, summary.failed) == (0, 2)
    assert summary.errors == [
        {"source": f"f:{n}", "reason": "not published: Throttling after botocore's retries"}
        for n in range(2)
    ]
    assert sleeps == []


def test_publisher_reports_entries_that_finally_fail_by_source(deployed):
    # GIVEN SNS rejects message 0 as bad input and always fails message 1 on its side
    def publish_batch(TopicArn, PublishBatchRequestEntries):
        failed, rest = [], []
        for entry in PublishBatchRequestEntries:
            n = json.loads(entry["Message"])["n"]
            if n == 0:
                failed.append({"Id": entry["Id"], "Code": "InvalidParameter", "SenderFault": True})
            elif n == 1:
                failed.append({"Id": entry["Id"], "Code": "InternalError", "SenderFault": False})
            else:
                rest.append(entry)
        ok = deployed.sns.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=rest)
        return {"Successful": ok["Successful"], "Failed": failed}

    errors: list[tuple[str, str]] = []
    publisher = BatchPublisher(
        Wrapped(deployed.sns, publish_batch=publish_batch),
        sleep=lambda s: None,
        max_attempts=3,
        on_error=lambda source, reason: errors.append((source, reason)),
    )
    topic = deployed.outputs["ItemGenSNSTopicArn"]
    for n in range(4):
        publisher.add(topic, json.dumps({"n": n}), f"in.ndjson:{n + 1}")
    summary = publisher.close()
    assert (summary.published, summary.failed) == (2, 2)
    assert [source for source, _ in errors] == ["in.ndjson:1", "in.ndjson:2"]
    assert "SNS rejected it (InvalidParameter" in errors[0][1]
    assert "InternalError" in errors[1][1] and "after 3 attempts" in errors[1][1]


def test_publisher_stops_on_an_error_retrying_cannot_fix(deployed):
    publisher = BatchPublisher(deployed.sns)
    publisher.add("arn:aws:sns:us-east-1:123456789012:missing", "{}", "f:1")
    with pytest.raises(PublishAborted, match=r"SNS refused publishing to arn:aws:sns:.*:missing"):
        publisher.close()
    # retrying the same call cannot fix a missing topic: it is not classed as transient
    assert not issubclass(PublishAborted, TransientError)


def test_parallel_workers_publish_every_message_once(deployed):
    calls: list[int] = []
    publisher = BatchPublisher(_counting(deployed.sns, calls), workers=4)
    topic = deployed.outputs["ItemGenSNSTopicArn"]
    for n in range(205):
        publisher.add(topic, json.dumps({"n": n}), f"f:{n}")
    summary = publisher.close()
    assert sorted(calls) == [5] + [10] * 20
    assert (summary.published, summary.failed, summary.errors) == (205, 0, [])
    assert sorted(m["n"] for m in deployed.published("gen")) == list(range(205))


def test_parallel_workers_stop_on_an_error_retrying_cannot_fix(deployed):
    publisher = BatchPublisher(deployed.sns, workers=4)
    with pytest.raises(PublishAborted, match="missing"):
        for n in range(200):
            publisher.add("arn:aws:sns:us-east-1:123456789012:missing", "{}", f"f:{n}")
        publisher.close()
