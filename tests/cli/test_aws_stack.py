"""``stactools_ingest.aws_stack`` against moto: the ingestion stack's outputs and queue depths."""

from __future__ import annotations

import json

import pytest
from moto_stack import STACK

from stactools_ingest.aws_dlq import list_dead_letters
from stactools_ingest.aws_stack import (
    MissingStackOutput,
    StackNotFound,
    queue_status,
    resolve_stack,
)


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


def test_queue_status_counts_queued_in_flight_and_dead_letters(deployed):
    deployed.send("gen", "queue", ["a", "b", "c"])
    deployed.sqs.receive_message(QueueUrl=deployed.url("gen"), MaxNumberOfMessages=1)
    deployed.send("load", "dlq", ["x", "y"])
    assert queue_status(deployed.outputs, deployed.sqs) == {
        "gen": {"queued": 2, "in_flight": 1, "dead_letters": 0},
        "load": {"queued": 0, "in_flight": 0, "dead_letters": 2},
    }
