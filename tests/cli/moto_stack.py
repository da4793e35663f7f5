"""An emulated ingestion stack (moto) for the AWS tooling's tests.

The ``deployed`` fixture emulates the CDK app's ingestion stack: a CloudFormation stack whose
template creates the two topics and the two queues with their DLQs (and names them in outputs
with the app's output names) and the payload bucket, plus the SNS → SQS subscriptions moto's
CloudFormation cannot make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stactools_ingest import aws_dlq

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
    resources["PayloadBucket"] = {
        "Type": "AWS::S3::Bucket",
        "Properties": {"BucketName": "test-ingestion-payloads"},
    }
    outputs["PayloadBucketName"] = {"Value": {"Ref": "PayloadBucket"}}
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
    monkeypatch.setattr(aws_dlq, "RECEIVE_WAIT_SECONDS", 0)  # moto answers empty at once
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
