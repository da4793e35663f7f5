"""Dead letters of a deployed stack: peek at them without consuming, and redrive them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from stactools_ingest.aws_stack import (
    STAGE_OUTPUTS,
    AwsOpsError,
    client,
    output,
    queue_counts,
    stages,
)

SQS_BATCH_ENTRIES = 10
# Long polling: an empty answer then means the queue is empty, not that a short poll was unlucky.
RECEIVE_WAIT_SECONDS = 1


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
    for name in stages(stage):
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
    for name in stages(stage):
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
