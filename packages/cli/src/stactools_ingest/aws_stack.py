"""A deployed ingestion stack: its CloudFormation outputs and its queues' depths.

Everything here takes boto3 clients (or makes one from the usual AWS environment) and plain values,
so the click commands stay thin and the tests run it against moto.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from ingest_common.errors import IngestError

STACK_HELP = (
    "The ingestion stack (`<prefix>-ingestion` in the CDK app), whose outputs name the "
    "topics and queues."
)

# Output names the CDK app's ingestion stack writes (infrastructure/ingestion.py).
STAGE_OUTPUTS = {
    "gen": {"topic": "ItemGenSNSTopicArn", "queue": "ItemGenQueueUrl", "dlq": "ItemGenDLQUrl"},
    "load": {"topic": "ItemLoadTopicArn", "queue": "ItemLoadQueueUrl", "dlq": "ItemLoadDLQUrl"},
}


class AwsOpsError(IngestError):
    """The deployment cannot be reached or does not look like the CDK app's ingestion stack."""


class StackNotFound(AwsOpsError):
    """No CloudFormation stack by that name in this account and region."""


class MissingStackOutput(AwsOpsError):
    """The stack lacks an output this command needs (probably not the ingestion stack)."""


def client(service: str, config: Config | None = None) -> Any:
    """A boto3 client with region and credentials from the usual AWS environment and config."""
    try:
        return boto3.client(service, config=config)
    except NoRegionError:
        raise AwsOpsError(
            "no AWS region configured: set AWS_REGION, AWS_DEFAULT_REGION or a profile's region"
        ) from None


class StackOutputs(dict[str, str]):
    """Outputs by OutputKey; a missing key raises an error that names the stack and the output."""

    def __init__(self, stack_name: str, values: dict[str, str]) -> None:
        super().__init__(values)
        self.stack_name = stack_name

    def __missing__(self, key: str) -> str:
        raise MissingStackOutput(
            f"stack {self.stack_name!r} has no output {key!r}; --stack must name the ingestion "
            f"stack (`<prefix>-ingestion`), not the network or database stack"
        )


def output(outputs: dict[str, str], key: str) -> str:
    """``outputs[key]``, with the same clear error for a plain dict as for ``StackOutputs``."""
    if key in outputs:
        return outputs[key]
    return StackOutputs(getattr(outputs, "stack_name", "given"), {})[key]


def resolve_stack(stack_name: str, cfn: Any = None) -> dict[str, str]:
    """The outputs of one CloudFormation stack by OutputKey.

    NAME is the ingestion stack: the CDK app splits network, database and ingestion into separate
    stacks, and only the ingestion stack exports the topic, queue and function outputs, so this
    looks in that one stack and never searches the others.
    """
    cfn = cfn or client("cloudformation")
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except NoCredentialsError:
        raise AwsOpsError(
            "no AWS credentials found: configure a profile or AWS_* variables"
        ) from None
    except ClientError as e:
        if e.response["Error"].get("Code") == "ValidationError" and "does not exist" in str(e):
            region = cfn.meta.region_name
            raise StackNotFound(
                f"stack {stack_name!r} not found in {region}; pass the ingestion stack's name "
                "(`<prefix>-ingestion`) and check AWS_REGION"
            ) from None
        raise AwsOpsError(f"could not describe stack {stack_name!r}: {e}") from e
    if not stacks:
        raise StackNotFound(f"stack {stack_name!r} not found")
    values = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return StackOutputs(stack_name, values)


def stages(stage: str | None) -> list[str]:
    if stage is None:
        return list(STAGE_OUTPUTS)
    if stage not in STAGE_OUTPUTS:
        raise AwsOpsError(f"unknown stage {stage!r}; use one of {', '.join(STAGE_OUTPUTS)}")
    return [stage]


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    """Messages waiting and in flight on one queue (SQS's approximate counts)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "waiting": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def queue_status(outputs: dict[str, str], sqs: Any = None) -> dict[str, dict[str, int]]:
    """Per stage: messages queued and in flight on the queue, and on its dead-letter queue."""
    sqs = sqs or client("sqs")
    status: dict[str, dict[str, int]] = {}
    for name, keys in STAGE_OUTPUTS.items():
        queue = queue_counts(sqs, output(outputs, keys["queue"]))
        dlq = queue_counts(sqs, output(outputs, keys["dlq"]))
        status[name] = {
            "queued": queue["waiting"],
            "in_flight": queue["in_flight"],
            "dead_letters": dlq["waiting"] + dlq["in_flight"],
        }
    return status
