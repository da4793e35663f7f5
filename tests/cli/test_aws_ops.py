"""``stactools_ingest.aws_ops`` against moto: stack outputs, dead letters, redrive, publishing.

The ``deployed`` fixture emulates the CDK app's ingestion stack: a CloudFormation stack whose
template creates the two topics and the two queues with their DLQs (and names them in outputs
with the app's output names), plus the SNS → SQS subscriptions moto's CloudFormation cannot make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from factories import collection, item
from moto import mock_aws

from ingest_common.errors import TransientError
from stactools_ingest import aws_ops
from stactools_ingest.aws_ops import (
    SNS_MAX_BYTES,
    BatchPublisher,
    InvalidDocument,
    MissingStackOutput,
    PublishAborted,
    StackNotFound,
    list_dead_letters,
    queue_status,
    redrive_dead_letters,
    resolve_stack,
    route,
)

STACK = "test-ingestion"
STAGES = {"gen": "ItemGen", "load": "ItemLoad"}


def _template() -> dict:
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for prefix in STAGES.values():
        resources[f"{prefix}DLQ"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": f"{prefix}-dlq"},
        }
        resources[f"{prefix}Queue"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": f"{prefix}-queue",
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [f"{prefix}DLQ", "Arn"]},
                    "maxReceiveCount": 5,
                },
            },
        }
        resources[f"{prefix}Topic"] = {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": f"{prefix}-topic"},
        }
        outputs[f"{prefix}QueueUrl"] = {"Value": {"Ref": f"{prefix}Queue"}}
        outputs[f"{prefix}DLQUrl"] = {"Value": {"Ref": f"{prefix}DLQ"}}
        outputs[f"{prefix}FunctionName"] = {"Value": f"{prefix}-function"}
    outputs["ItemGenSNSTopicArn"] = {"Value": {"Ref": "ItemGenTopic"}}
    outputs["ItemLoadTopicArn"] = {"Value": {"Ref": "ItemLoadTopic"}}
    outputs["PgstacSecret"] = {"Value": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"}
    return {"Resources": resources, "Outputs": outputs}


@dataclass
class Deployed:
    """The emulated deployment: its outputs and clients to look at what happened."""

    outputs: dict[str, str]
    sqs: Any
    sns: Any
    cfn: Any

    def url(self, stage: str, kind: str = "queue") -> str:
        return self.outputs[f"{STAGES[stage]}{'QueueUrl' if kind == 'queue' else 'DLQUrl'}"]

    def send(self, stage: str, kind: str, bodies: list[str]) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.url(stage, kind), MessageBody=body)

    def drain(self, stage: str, kind: str = "queue") -> list[str]:
        """Every body on a queue, consumed."""
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.url(stage, kind), MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", [])
            if not messages:
                return bodies
            for m in messages:
                bodies.append(m["Body"])
                self.sqs.delete_message(
                    QueueUrl=self.url(stage, kind), ReceiptHandle=m["ReceiptHandle"]
                )

    def published(self, stage: str) -> list[Any]:
        """What was published to a stage's topic, decoded from the subscribed queue's envelopes."""
        return [json.loads(json.loads(body)["Message"]) for body in self.drain(stage)]

    def depth(self, stage: str, kind: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url(stage, kind),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def deployed(aws_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    """A moto account holding the ingestion stack, its topics subscribed to its queues."""
    monkeypatch.setattr(aws_ops, "RECEIVE_WAIT_SECONDS", 0)  # moto answers empty at once
    with mock_aws():
        cfn = boto3.client("cloudformation")
        cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(_template()))
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        }
        for prefix, topic_key in (
            ("ItemGen", "ItemGenSNSTopicArn"),
            ("ItemLoad", "ItemLoadTopicArn"),
        ):
            queue_arn = sqs.get_queue_attributes(
                QueueUrl=outputs[f"{prefix}QueueUrl"], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=outputs[topic_key], Protocol="sqs", Endpoint=queue_arn)
        yield Deployed(outputs=outputs, sqs=sqs, sns=sns, cfn=cfn)


class Wrapped:
    """A moto client with some methods replaced, to script failures moto cannot produce."""

    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --- resolve_stack ----------------------------------------------------------------------------


def test_resolve_stack_returns_outputs_by_key(deployed):
    outputs = resolve_stack(STACK, deployed.cfn)
    assert outputs == deployed.outputs
    assert outputs["ItemGenSNSTopicArn"] == "arn:aws:sns:us-east-1:123456789012:ItemGen-topic"
    assert outputs["ItemLoadDLQUrl"].endswith("/ItemLoad-dlq")


def test_resolve_stack_creates_its_client_from_the_environment(deployed):
    assert resolve_stack(STACK)["ItemLoadFunctionName"] == "ItemLoad-function"


def test_unknown_stack_is_named_in_the_error(deployed):
    with pytest.raises(StackNotFound, match="stack 'nope-ingestion' not found in us-east-1"):
        resolve_stack("nope-ingestion", deployed.cfn)


def test_missing_output_names_the_stack_and_the_output(deployed):
    # GIVEN the database stack, which has outputs but not the ingestion ones
    template = {
        "Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "other"}}},
        "Outputs": {"PgstacSecret": {"Value": "arn:secret"}},
    }
    deployed.cfn.create_stack(StackName="test-database", TemplateBody=json.dumps(template))
    outputs = resolve_stack("test-database", deployed.cfn)
    assert outputs == {"PgstacSecret": "arn:secret"}
    # WHEN a command needs an ingestion output THEN the error names both
    with pytest.raises(MissingStackOutput) as e:
        list_dead_letters(outputs, "gen", sqs=deployed.sqs)
    assert "stack 'test-database' has no output 'ItemGenDLQUrl'" in str(e.value)
    with pytest.raises(MissingStackOutput, match="'ItemLoadQueueUrl'"):
        queue_status({k: v for k, v in deployed.outputs.items() if k != "ItemLoadQueueUrl"})


# --- dead letters -----------------------------------------------------------------------------


def test_list_dead_letters_peeks_without_consuming(deployed):
    gen = [json.dumps({"n": i}) for i in range(3)]
    load = [json.dumps({"m": i}) for i in range(12)]
    deployed.send("gen", "dlq", gen)
    deployed.send("load", "dlq", load)

    letters = list_dead_letters(deployed.outputs, sqs=deployed.sqs)

    assert [(d["stage"], d["body"]) for d in letters] == [
        *(("gen", b) for b in gen),
        *(("load", b) for b in load),
    ]
    assert set(letters[0]) == {
        "stage",
        "message_id",
        "body",
        "receive_count",
        "sent_at",
        "reason",
    }
    assert letters[0]["receive_count"] == 1
    assert letters[0]["sent_at"].endswith("+00:00")
    assert len({d["message_id"] for d in letters}) == 15
    # nothing consumed, and everything visible again at once
    assert deployed.drain("gen", "dlq") == gen
    assert sorted(deployed.drain("load", "dlq")) == sorted(load)


def test_list_dead_letters_by_stage_and_limit(deployed):
    deployed.send("gen", "dlq", ["g1", "g2"])
    deployed.send("load", "dlq", [f"l{i}" for i in range(12)])
    assert [d["body"] for d in list_dead_letters(deployed.outputs, "gen", sqs=deployed.sqs)] == [
        "g1",
        "g2",
    ]
    limited = list_dead_letters(deployed.outputs, "load", limit=11, sqs=deployed.sqs)
    assert [d["body"] for d in limited] == [f"l{i}" for i in range(11)]
    assert list_dead_letters(deployed.outputs, None, limit=1, sqs=deployed.sqs)[0]["body"] == "g1"
    assert deployed.depth("load", "dlq") == 12


def test_redrive_moves_dead_letters_back_by_hand_when_move_tasks_are_missing(deployed):
    # GIVEN 23 dead letters on ItemGen's DLQ and one on ItemLoad's (moto has no move tasks)
    bodies = [json.dumps({"request": i}) for i in range(23)]
    deployed.send("gen", "dlq", bodies[1:])
    deployed.sqs.send_message(
        QueueUrl=deployed.url("gen", "dlq"),
        MessageBody=bodies[0],
        MessageAttributes={"origin": {"DataType": "String", "StringValue": "test"}},
    )
    deployed.send("load", "dlq", ["stays"])
    # WHEN ItemGen's are redriven
    moved = redrive_dead_letters(deployed.outputs, "gen", sqs=deployed.sqs)
    # THEN all 23 are on the ItemGen queue, none on its DLQ, and ItemLoad's DLQ is untouched
    assert moved == 23
    received = []
    while batch := deployed.sqs.receive_message(
        QueueUrl=deployed.url("gen"), MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        received += batch
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    first = next(m for m in received if m["Body"] == bodies[0])
    assert first["MessageAttributes"]["origin"]["StringValue"] == "test"
    assert deployed.depth("gen", "dlq") == 0
    assert deployed.drain("load", "dlq") == ["stays"]


def test_redrive_both_stages(deployed):
    deployed.send("gen", "dlq", ["a", "b"])
    deployed.send("load", "dlq", ["c"])
    assert redrive_dead_letters(deployed.outputs, sqs=deployed.sqs) == 3
    assert sorted(deployed.drain("gen")) == ["a", "b"]
    assert deployed.drain("load") == ["c"]
    assert redrive_dead_letters(deployed.outputs, sqs=deployed.sqs) == 0


def test_redrive_never_deletes_a_message_whose_copy_was_refused(deployed):
    # GIVEN SQS refuses the first entry of every send batch
    bodies = [f"m{i}" for i in range(25)]
    deployed.send("load", "dlq", bodies)

    def send_message_batch(QueueUrl, Entries):
        ok = deployed.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries[1:])
        failed = [{"Id": Entries[0]["Id"], "Code": "InternalError", "SenderFault": False}]
        return {"Successful": ok["Successful"], "Failed": failed}

    sqs = Wrapped(deployed.sqs, send_message_batch=send_message_batch)
    # WHEN redriving
    moved = redrive_dead_letters(deployed.outputs, "load", sqs=sqs)
    # THEN batches of 10, 10, 5 each lost one copy: 22 moved, the 3 refused are still dead letters
    assert moved == 22
    on_queue = deployed.drain("load")
    assert len(on_queue) == 22
    assert deployed.depth("load", "dlq") == 3
    assert sorted(on_queue + [b for b in bodies if b not in on_queue]) == sorted(bodies)


def test_redrive_prefers_a_message_move_task(deployed):
    deployed.send("gen", "dlq", ["a", "b", "c"])
    calls: list[dict] = []
    sqs = Wrapped(deployed.sqs, start_message_move_task=lambda **kw: calls.append(kw) or {})
    assert redrive_dead_letters(deployed.outputs, sqs=sqs) == 3
    assert calls == [
        {
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:ItemGen-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:ItemGen-queue",
        }
    ]
    assert deployed.depth("gen", "dlq") == 3  # the task (not us) moves them


def test_queue_status_counts_queued_in_flight_and_dead_letters(deployed):
    deployed.send("gen", "queue", ["a", "b", "c"])
    deployed.sqs.receive_message(QueueUrl=deployed.url("gen"), MaxNumberOfMessages=1)
    deployed.send("load", "dlq", ["x", "y"])
    assert queue_status(deployed.outputs, deployed.sqs) == {
        "gen": {"queued": 2, "in_flight": 1, "dead_letters": 0},
        "load": {"queued": 0, "in_flight": 0, "dead_letters": 2},
    }


# --- routing and publishing -------------------------------------------------------------------

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
    with pytest.raises(InvalidDocument, match="not an item request, collection request, STAC"):
        route({"hello": "world"})
    with pytest.raises(InvalidDocument, match="not an item request"):
        route(3)


def test_route_splits_a_feature_collection_over_the_size_limit():
    features = [item(f"i{n}", "c", n_assets=400) for n in range(30)]  # ~40 KB each
    routed = route({"type": "FeatureCollection", "features": features})
    assert len(routed) > 1
    assert all(len(m.encode()) <= SNS_MAX_BYTES for _, m in routed)
    ids = [f["id"] for _, m in routed for f in json.loads(m)["features"]]
    assert ids == [f"i{n}" for n in range(30)]


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


def test_publisher_retries_throttling_and_failed_entries(deployed):
    # GIVEN SNS throttles the first call, then fails entry 1 as its own fault once
    script = iter(["throttle", "fail-one"])
    sleeps: list[float] = []

    def publish_batch(**kwargs):
        step = next(script, None)
        if step == "throttle":
            raise _throttled()
        entries = kwargs["PublishBatchRequestEntries"]
        if step == "fail-one":
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
    # THEN everything arrives exactly once after two backoffs
    assert (summary.published, summary.failed) == (3, 0)
    assert len(sleeps) == 2
    assert sorted(m["n"] for m in deployed.published("gen")) == [0, 1, 2]


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
