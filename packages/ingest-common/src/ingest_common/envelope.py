"""Unwrap an SQS record body that is either an SNS notification or, with raw delivery, the message.

Powertools' ``SnsSqsEnvelope`` insists that every body is an SNS envelope and validates each with
pydantic; our contract accepts raw delivery too, and the ItemLoad hot path sees a thousand records
per batch, so this is one ``orjson.loads`` (two for SNS) and a dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ingest_common.errors import MessageFormatError

# SNS refuses a message over 256 KiB (262,144 bytes, attributes included), and a PublishBatch
# call whose messages add up to more. The one definition: both publishers import it.
SNS_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message, the time it was sent (to keep the newest of duplicates), and what
    SNS said about it: its ``MessageId`` and ``MessageAttributes`` (None for raw deliveries)."""

    message: Any
    sent_at: float | None
    sns_message_id: str | None = None
    sns_attributes: dict[str, Any] | None = None


def _sns_timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def unwrap(body: str | bytes, sqs_sent_timestamp: str | None = None) -> Envelope:
    """Decode a record body, peeling off an SNS notification envelope when there is one.

    The send time is the SNS ``Timestamp`` when present, else SQS's ``SentTimestamp`` (epoch ms).
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise MessageFormatError(f"message body is not valid JSON ({e}); send a JSON object") from e
    sent_at = float(sqs_sent_timestamp) / 1000.0 if sqs_sent_timestamp else None
    sns_id: str | None = None
    sns_attributes: dict[str, Any] | None = None
    if isinstance(decoded, dict) and decoded.get("Type") == "Notification" and "Message" in decoded:
        sent_at = _sns_timestamp(decoded.get("Timestamp")) or sent_at
        if isinstance(decoded.get("MessageId"), str):
            sns_id = decoded["MessageId"]
        if isinstance(decoded.get("MessageAttributes"), dict):
            sns_attributes = decoded["MessageAttributes"]
        inner = decoded["Message"]
        try:
            decoded = orjson.loads(inner)
        except orjson.JSONDecodeError as e:
            raise MessageFormatError(
                f"SNS notification's Message is not valid JSON ({e}); publish a JSON object"
            ) from e
    return Envelope(decoded, sent_at, sns_id, sns_attributes)
