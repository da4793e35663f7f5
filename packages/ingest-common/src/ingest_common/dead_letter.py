"""Send records that can never succeed straight to the stage's dead-letter queue.

SQS's own redrive policy moves a record to the DLQ only after ``maxReceiveCount`` receives, each
after a visibility timeout: hours for a message that fails the same way every time. A stage sends
such a record itself, body unchanged (so a redrive replays it as it came), with the message
attributes ``error`` (the reason) and ``stage``, and then reports it as handled. A record that
cannot be sent stays a batch item failure, so SQS retries it as before: nothing is dropped.

``DeadLetteringProcessor`` is the Powertools batch processor both stages use: a record handler
that raises a ``PermanentError`` has its record dead-lettered at the end of the batch.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ingest_common.errors import PermanentError

logger = logging.getLogger(__name__)

SQS_MAX_ATTRIBUTES = 10  # message attributes per message
SQS_BATCH_ENTRIES = 10  # entries per SendMessageBatch
SQS_BATCH_BYTES = 256 * 1024  # a SendMessageBatch's payload, bodies and attributes together
ERROR_ATTRIBUTE_CHARS = 4096  # long enough for a reason and its cause, short beside the body
ERROR_ATTRIBUTE, STAGE_ATTRIBUTE = "error", "stage"
# Characters SQS refuses in bodies and attribute values (XML 1.0's excluded ones).
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record as Lambda delivered it (``messageId``, ``body``, ``messageAttributes``) and why."""

    record: Mapping[str, Any]
    reason: str

    @property
    def message_id(self) -> str:
        """The SQS message id of the record."""
        return self.record["messageId"]


def error_attribute(reason: str, limit: int = ERROR_ATTRIBUTE_CHARS) -> str:
    """The reason as an SQS attribute value: characters SQS refuses replaced, cut to ``limit``."""
    text = _NOT_SQS_TEXT.sub("\ufffd", reason.strip()) or "no reason given"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _attribute(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Lambda-event message attribute (camelCase) as SendMessage takes it, if it can."""
    data_type = value.get("dataType") or value.get("DataType")
    if not data_type:
        return None
    if data_type.startswith("Binary"):
        binary = value.get("binaryValue") or value.get("BinaryValue")
        if binary is None:
            return None
        raw = base64.b64decode(binary) if isinstance(binary, str) else binary
        return {"DataType": data_type, "BinaryValue": raw}
    string = value.get("stringValue") or value.get("StringValue")
    if string is None:
        return None
    return {"DataType": data_type, "StringValue": string}


def message_attributes(letter: DeadLetter, stage: str) -> dict[str, dict[str, Any]]:
    """The record's own attributes (as many as fit beside ours), plus ``error`` and ``stage``."""
    kept: dict[str, dict[str, Any]] = {}
    own = letter.record.get("messageAttributes") or {}
    for name in sorted(own):
        if name in (ERROR_ATTRIBUTE, STAGE_ATTRIBUTE):
            continue  # a redriven record failing again: the new reason replaces the old
        if len(kept) == SQS_MAX_ATTRIBUTES - 2:
            logger.warning(
                "dead letter keeps only %d of its message attributes",
                len(kept),
                extra={"message_id": letter.message_id},
            )
            break
        converted = _attribute(own[name])
        if converted is not None:
            kept[name] = converted
    kept[ERROR_ATTRIBUTE] = {"DataType": "String", "StringValue": error_attribute(letter.reason)}
    kept[STAGE_ATTRIBUTE] = {"DataType": "String", "StringValue": stage}
    return kept


def _size(entry: Mapping[str, Any]) -> int:
    size = len(entry["MessageBody"].encode())
    for name, value in entry["MessageAttributes"].items():
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(value.get("StringValue", "").encode()) + len(value.get("BinaryValue", b""))
    return size


def _batches(entries: Iterable[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Groups SendMessageBatch accepts: up to 10 entries and 256 KiB (a larger one alone)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = _size(entry)
        if batch and (len(batch) == SQS_BATCH_ENTRIES or size + entry_size > SQS_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        yield batch


class DeadLetterQueue:
    """A stage's DLQ (``DEAD_LETTER_QUEUE_URL``); without a url nothing is sent."""

    def __init__(self, url: str | None, stage: str, sqs: Any = None) -> None:
        self.url = url
        self.stage = stage
        self._sqs = sqs
        self._warned = False

    @property
    def sqs(self) -> Any:
        """The SQS client, made on first use so a stage without a DLQ never needs AWS."""
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs")
        return self._sqs

    def send(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Send ``letters``; returns the message ids SQS accepted (the rest must be retried)."""
        if not letters:
            return set()
        if not self.url:
            if not self._warned:  # once per process, not once per batch
                logger.warning(
                    "DEAD_LETTER_QUEUE_URL is not set; permanent failures are left to SQS retries"
                )
                self._warned = True
            return set()
        by_entry = {str(n): letter for n, letter in enumerate(letters)}
        entries = [
            {
                "Id": n,
                "MessageBody": letter.record["body"],
                "MessageAttributes": message_attributes(letter, self.stage),
            }
            for n, letter in by_entry.items()
        ]
        sent: set[str] = set()
        for batch in _batches(entries):
            try:
                response = self.sqs.send_message_batch(QueueUrl=self.url, Entries=batch)
            except Exception as e:  # botocore's errors, a bad url, no network: retry via SQS
                logger.error(
                    "could not send %d dead letters to %s: %s",
                    len(batch),
                    self.url,
                    e,
                    extra={"message_ids": [by_entry[x["Id"]].message_id for x in batch]},
                )
                continue
            for ok in response.get("Successful", []):
                sent.add(by_entry[ok["Id"]].message_id)
            for failed in response.get("Failed", []):
                logger.error(
                    "SQS refused a dead letter: %s %s",
                    failed.get("Code"),
                    failed.get("Message"),
                    extra={"message_id": by_entry[failed["Id"]].message_id},
                )
        return sent


class DeadLetteringProcessor(BatchProcessor):
    """Powertools' SQS batch processor that dead-letters records which can never succeed.

    A record handler raising a ``PermanentError`` (or a subclass calling ``dead_letter``) marks
    its record for the DLQ; at the end of the batch those records are sent in one go and the
    ones SQS accepted are taken off the batch item failures. Any other error keeps SQS's retry.
    """

    def __init__(self, dead_letters: DeadLetterQueue, logger: Any = None) -> None:
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False, logger=None)
        self.dead_letters = dead_letters
        self.log = logger or logging.getLogger(__name__)
        self._letters: list[DeadLetter] = []
        self.dead_lettered: set[str] = set()  # message ids the last batch sent to the DLQ
        self.reasons: dict[str, str] = {}  # why each failed record of the batch failed
        self.failed_records: list[tuple[dict[str, Any], str, bool]] = []
        """After the batch: each failed record, its reason, and whether it was dead-lettered
        (for the ledger)."""

    def _prepare(self) -> None:
        super()._prepare()
        self._letters = []
        self.dead_lettered = set()
        self.reasons = {}
        self.failed_records = []

    def dead_letter(self, record: Mapping[str, Any], reason: str) -> None:
        """Send this failed record to the DLQ at the end of the batch."""
        self._letters.append(DeadLetter(record, reason))

    def failure_handler(self, record: Any, exception: Any) -> Any:
        # The stage logs the failure with its context; here only the DLQ decision is made.
        self.reasons[_id(record)] = str(exception[1])
        if isinstance(exception[1], PermanentError):
            self.dead_letter(record.raw_event, str(exception[1]))
        return super().failure_handler(record, exception)

    def _clean(self) -> None:
        letters, self._letters = self._letters, []
        sent = self.dead_lettered = self.dead_letters.send(letters)
        by_id = {r["messageId"]: r for r in self.records or []}
        self.failed_records = [
            (by_id[mid], reason, mid in sent)
            for mid, reason in self.reasons.items()
            if mid in by_id
        ]
        if sent:
            self.fail_messages = [m for m in self.fail_messages if _id(m) not in sent]
            self.log.info(
                "dead-lettered records that can never succeed",
                extra={"message_ids": sorted(sent), "queue": self.dead_letters.url},
            )
        super()._clean()


def _id(message: Any) -> str:
    return message.message_id if isinstance(message, SQSRecord) else message["messageId"]
