"""Operate a deployed pipeline: read the ingestion stack's outputs, publish, inspect, redrive.

Everything here takes boto3 clients (or makes one from the usual AWS environment) and plain values,
so the click commands stay thin and the tests run it against moto.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ingest_common.errors import IngestError, PermanentError
from stactools_ingest.inputs import InputProblem, InputRecord, classify

STACK_HELP = (
    "The ingestion stack (`<prefix>-ingestion` in the CDK app), whose outputs name the "
    "topics and queues."
)

# Output names the CDK app's ingestion stack writes (infrastructure/ingestion.py).
STAGE_OUTPUTS = {
    "gen": {"topic": "ItemGenSNSTopicArn", "queue": "ItemGenQueueUrl", "dlq": "ItemGenDLQUrl"},
    "load": {"topic": "ItemLoadTopicArn", "queue": "ItemLoadQueueUrl", "dlq": "ItemLoadDLQUrl"},
}

# SNS refuses a message over 256 KiB, and a PublishBatch call whose messages add up to more.
SNS_MAX_BYTES = 256 * 1024
SNS_BATCH_ENTRIES = 10
SQS_BATCH_ENTRIES = 10
# Long polling: an empty answer then means the queue is empty, not that a short poll was unlucky.
RECEIVE_WAIT_SECONDS = 1

# Codes worth another try: throttling and the service's own trouble, never bad input.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottling",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


class AwsOpsError(IngestError):
    """The deployment cannot be reached or does not look like the CDK app's ingestion stack."""


class StackNotFound(AwsOpsError):
    """No CloudFormation stack by that name in this account and region."""


class MissingStackOutput(AwsOpsError):
    """The stack lacks an output this command needs (probably not the ingestion stack)."""


class InvalidDocument(PermanentError):
    """An input is neither a request nor a document the load topic accepts; it is not published."""


class PublishAborted(AwsOpsError):
    """SNS refused a whole call for a reason retrying cannot fix (missing topic, no permission).

    Not a TransientError: the same call fails the same way until the deployment is fixed.
    """


def client(service: str) -> Any:
    """A boto3 client with region and credentials from the usual AWS environment and config."""
    try:
        return boto3.client(service)
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


def _stages(stage: str | None) -> list[str]:
    if stage is None:
        return list(STAGE_OUTPUTS)
    if stage not in STAGE_OUTPUTS:
        raise AwsOpsError(f"unknown stage {stage!r}; use one of {', '.join(STAGE_OUTPUTS)}")
    return [stage]


def _iso_ms(epoch_ms: str | None) -> str | None:
    if not epoch_ms:
        return None
    return datetime.fromtimestamp(int(epoch_ms) / 1000, UTC).isoformat(timespec="milliseconds")


def list_dead_letters(
    outputs: dict[str, str], stage: str | None = None, limit: int = 100, *, sqs: Any = None
) -> list[dict]:
    """Peek at up to ``limit`` messages on the ItemGen and/or ItemLoad DLQ without consuming them.

    With ``VisibilityTimeout=0`` SQS may hand back the same first messages on every call and never
    show the rest, so each receive hides what it returns for a short 30 s timeout (letting the walk
    reach further into the queue) and, at the end, every peeked message is made visible again at
    once with ``ChangeMessageVisibility`` 0. Nothing is deleted; a peek counts as a receive in
    ``receive_count``.
    """
    sqs = sqs or client("sqs")
    found: list[dict] = []
    for name in _stages(stage):
        url = output(outputs, STAGE_OUTPUTS[name]["dlq"])
        handles: list[str] = []
        seen: set[str] = set()
        try:
            while len(found) < limit:
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(SQS_BATCH_ENTRIES, limit - len(found)),
                    VisibilityTimeout=30,
                    WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                new = [m for m in messages if m["MessageId"] not in seen]
                handles += [m["ReceiptHandle"] for m in messages]
                if not new:
                    break
                for m in new:
                    seen.add(m["MessageId"])
                    attributes = m.get("Attributes", {})
                    error = m.get("MessageAttributes", {}).get("error", {})
                    found.append(
                        {
                            "stage": name,
                            "message_id": m["MessageId"],
                            "body": m["Body"],
                            "receive_count": int(attributes.get("ApproximateReceiveCount", 0)),
                            "sent_at": _iso_ms(attributes.get("SentTimestamp")),
                            # set when the stage dead-lettered it itself; None after SQS's
                            # redrive policy moved it (the reason is then in the logs)
                            "reason": error.get("StringValue"),
                        }
                    )
        finally:
            _release(sqs, url, handles)
    return found[:limit]


def _release(sqs: Any, url: str, handles: list[str]) -> None:
    """Make peeked messages visible again now instead of after their timeout."""
    for start in range(0, len(handles), SQS_BATCH_ENTRIES):
        chunk = handles[start : start + SQS_BATCH_ENTRIES]
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(chunk)
            ],
        )


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


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


def redrive_dead_letters(
    outputs: dict[str, str], stage: str | None = None, *, sqs: Any = None
) -> int:
    """Move dead letters back to their source queue; returns how many were moved or handed to SQS.

    Prefers an SQS message-move task (server side, survives this process); where that API is
    missing (moto, some endpoints) or not permitted, moves them itself in batches of 10, deleting a
    message only after SQS accepted its copy, so a failure leaves it on the DLQ rather than lost.
    """
    sqs = sqs or client("sqs")
    moved = 0
    for name in _stages(stage):
        dlq_url = output(outputs, STAGE_OUTPUTS[name]["dlq"])
        queue_url = output(outputs, STAGE_OUTPUTS[name]["queue"])
        waiting = queue_counts(sqs, dlq_url)["waiting"]
        if waiting == 0:
            continue
        try:
            sqs.start_message_move_task(
                SourceArn=_queue_arn(sqs, dlq_url), DestinationArn=_queue_arn(sqs, queue_url)
            )
            moved += waiting
        except (NotImplementedError, ClientError) as e:
            code = e.response["Error"].get("Code", "") if isinstance(e, ClientError) else ""
            if isinstance(e, ClientError) and not _move_task_unavailable(code):
                raise AwsOpsError(f"could not start a message move task on {dlq_url}: {e}") from e
            moved += _move_by_hand(sqs, dlq_url, queue_url)
    return moved


def _move_task_unavailable(code: str) -> bool:
    return code in {"UnsupportedOperation", "AccessDenied", "AccessDeniedException"} or (
        code.startswith("InvalidAction") or "NotImplemented" in code
    )


_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")


def _move_by_hand(sqs: Any, source_url: str, target_url: str) -> int:
    """Receive, send, then delete only what was sent; returns the number moved."""
    moved = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=source_url,
            MaxNumberOfMessages=SQS_BATCH_ENTRIES,
            VisibilityTimeout=60,  # long enough to send and delete; a failed copy reappears after
            WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return moved
        entries = []
        for i, m in enumerate(messages):
            entry = {"Id": str(i), "MessageBody": m["Body"]}
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = {  # only the fields SendMessage accepts
                    key: {k: v for k, v in value.items() if k in _ATTRIBUTE_FIELDS}
                    for key, value in m["MessageAttributes"].items()
                }
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=target_url, Entries=entries).get("Successful", [])
        sent_ids = {s["Id"] for s in sent}
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if str(i) in sent_ids
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=source_url, Entries=done)
        moved += len(done)
        if not done:
            return moved  # SQS refuses every copy: stop rather than spin on the same messages


# --- publishing -----------------------------------------------------------------------------


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def route(doc: Any) -> list[tuple[str, str]]:
    """The ``(stage, message)`` pairs one input becomes: requests go to ItemGen, STAC to ItemLoad.

    Classified (and a request validated) as ``run`` does, so a bad input is reported by the caller
    and never published; an item without a collection is refused for the same reason. A
    FeatureCollection over SNS's size limit is split into several that fit.
    """
    verdict = classify(InputRecord("", doc))
    if isinstance(verdict, InputProblem):
        raise InvalidDocument(verdict.reason)
    stage, _ = verdict
    kind = doc.get("type")
    if kind == "Feature" and not doc.get("collection"):
        raise InvalidDocument(f"item {doc.get('id')!r} has no 'collection'; set one to load it")
    if kind == "FeatureCollection":
        return [(stage, m) for m in _split_feature_collection(doc)]
    return [(stage, _dumps(doc))]


def _split_feature_collection(doc: dict) -> list[str]:
    """One message when it fits, else FeatureCollections of as many features as fit each."""
    whole = _dumps(doc)
    if len(whole.encode()) <= SNS_MAX_BYTES or len(doc.get("features") or []) < 2:
        return [whole]
    shell = {k: v for k, v in doc.items() if k != "features"}
    overhead = len(_dumps({**shell, "features": []}).encode())
    chunks: list[list[str]] = [[]]
    size = overhead
    for feature in doc["features"]:
        text = _dumps(feature)
        n = len(text.encode()) + 1  # the comma
        if chunks[-1] and size + n > SNS_MAX_BYTES:
            chunks.append([])
            size = overhead
        chunks[-1].append(text)
        size += n
    prefix = _dumps({**shell, "features": []})[:-3]  # everything before `[]}`
    return [f"{prefix}[{','.join(chunk)}]}}" for chunk in chunks]


@dataclass
class PublishSummary:
    """What a publish run did; ``errors`` name each failed input by its source (file:line)."""

    published: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages published per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary ``--json`` prints."""
        return {
            "published": self.published,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "errors": self.errors,
        }


@dataclass
class _Pending:
    source: str
    message: str
    size: int


class BatchPublisher:
    """Buffers messages per topic and sends them with SNS ``publish_batch``.

    A call holds at most 10 messages adding up to at most 256 KiB. Throttling and the service's
    own failures, for the whole call or single entries, are retried with jittered exponential
    backoff; an entry that still fails, or that SNS rejects as bad input, is reported by source.
    """

    def __init__(
        self,
        sns: Any,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.2,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        on_error: Callable[[str, str], None] | None = None,
        on_progress: Callable[[PublishSummary], None] | None = None,
    ) -> None:
        self.sns = sns
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.on_error = on_error
        self.on_progress = on_progress
        self.summary = PublishSummary()
        self._buffers: dict[str, list[_Pending]] = {}
        self._started = time.monotonic()

    def fail(self, source: str, reason: str) -> None:
        """Count an input that will not be published (malformed, invalid, too large)."""
        self.summary.failed += 1
        self.summary.errors.append({"source": source, "reason": reason})
        if self.on_error:
            self.on_error(source, reason)
        self._progress()

    def add(self, topic_arn: str, message: str, source: str) -> None:
        """Queue one message for a topic, sending the topic's batch when it is full."""
        size = len(message.encode())
        if size > SNS_MAX_BYTES:
            self.fail(
                source,
                f"message is {size} bytes, over SNS's 256 KiB limit; upload the document to S3 "
                'and submit {"href": "s3://…"} instead',
            )
            return
        buffer = self._buffers.setdefault(topic_arn, [])
        if len(buffer) == SNS_BATCH_ENTRIES or sum(p.size for p in buffer) + size > SNS_MAX_BYTES:
            self._send(topic_arn, buffer)
            buffer.clear()
        buffer.append(_Pending(source, message, size))

    def close(self) -> PublishSummary:
        """Send what is buffered and return the summary."""
        for topic_arn, buffer in self._buffers.items():
            if buffer:
                self._send(topic_arn, buffer)
                buffer.clear()
        self.summary.seconds = time.monotonic() - self._started
        return self.summary

    def _delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0)

    def _send(self, topic_arn: str, batch: list[_Pending]) -> None:
        pending = dict(enumerate(batch))
        reasons: dict[int, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(self._delay(attempt - 1))
            try:
                response = self.sns.publish_batch(
                    TopicArn=topic_arn,
                    PublishBatchRequestEntries=[
                        {"Id": str(i), "Message": p.message} for i, p in pending.items()
                    ],
                )
            except ClientError as e:
                code = e.response["Error"].get("Code", "")
                if code not in RETRYABLE_CODES:
                    self.summary.seconds = time.monotonic() - self._started
                    raise PublishAborted(
                        f"SNS refused publishing to {topic_arn} ({code}: "
                        f"{e.response['Error'].get('Message', '')}); "
                        f"{self.summary.published} published before it stopped"
                    ) from e
                reasons = {i: f"{code} after {attempt + 1} attempts" for i in pending}
                continue
            except (BotoConnectionError, BotoCoreError) as e:
                reasons = {i: f"{e} after {attempt + 1} attempts" for i in pending}
                continue
            for ok in response.get("Successful", []):
                pending.pop(int(ok["Id"]), None)
                self.summary.published += 1
            retry: dict[int, _Pending] = {}
            for bad in response.get("Failed", []):
                index = int(bad["Id"])
                reason = f"{bad.get('Code')}: {bad.get('Message', '')}".strip()
                if bad.get("SenderFault") and bad.get("Code") not in RETRYABLE_CODES:
                    self.fail(pending.pop(index).source, f"SNS rejected it ({reason})")
                else:
                    retry[index] = pending.pop(index)
                    reasons[index] = f"{reason} after {attempt + 1} attempts"
            pending = retry
            self._progress()
            if not pending:
                return
        for index, p in pending.items():
            self.fail(p.source, f"not published: {reasons.get(index, 'retries exhausted')}")

    def _progress(self) -> None:
        if self.on_progress:
            self.summary.seconds = time.monotonic() - self._started
            self.on_progress(self.summary)
