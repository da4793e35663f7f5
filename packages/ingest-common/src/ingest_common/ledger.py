"""What both stages agree on about the ledger: request ids, states, and ItemGen's status reports.

The ledger (``item_load.ledger``) answers "what happened to request X?". Only ItemLoad writes it:
ItemGen has no database, so it reports its outcomes as *status reports* on the load topic,
beside the items it publishes, and ItemLoad records them with everything else it loads.

A request's id is the sender's (the request's ``request_id`` field, or the SNS/SQS message
attribute ``request_id``), else the id AWS gave the message it came in: the SNS ``MessageId``
when SNS wraps its deliveries, or the SQS ``messageId`` for raw deliveries (the stack's
default, where the MessageId ``aws sns publish`` prints never reaches the stage). So whoever
publishes for a user (the ingest API, ItemGen) names every message with the attribute. A
redrive keeps the body and attributes, so a redriven request that was named (field or
attribute) keeps its id; one known only by its SQS messageId gets a new one when it is
dead-lettered and again when redriven (``submit`` names its messages only by submission).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REQUEST_ID_ATTRIBUTE = "request_id"
SUBMISSION_ATTRIBUTE = "submission_id"
"""Groups the messages one `submit`/`inventory`/`crawl` published: `status --submission ID`."""
STATUS_TYPE = "stactools_ingest:status"
"""The ``type`` of a status report on the load topic (not STAC: never stored in pgstac)."""
REQUEST_ID_MAX_CHARS = 256
GEN_STAGE, LOAD_STAGE = "item-gen", "item-load"
"""How the ledger names the stages (the local workers are these stages too)."""

QUEUED, GENERATED, LOADED, FAILED, DEAD_LETTERED, SUPERSEDED = (
    "queued",
    "generated",
    "loaded",
    "failed",
    "dead_lettered",
    "superseded",
)
STATES = (QUEUED, GENERATED, LOADED, FAILED, DEAD_LETTERED, SUPERSEDED)
PAGE_MAX = 1000
"""The most ledger rows the ingest API (deployed, or ``serve``'s) answers in one page."""
REPORTED_STATES = frozenset({GENERATED, FAILED, DEAD_LETTERED})
"""What a status report may say: the states ItemGen decides."""


def new_submission_id() -> str:
    """A fresh submission id: what groups one command's messages in the ledger."""
    import uuid

    return f"sub-{uuid.uuid4().hex[:16]}"


def attribute_value(attributes: Mapping[str, Any] | None, name: str) -> str | None:
    """A string message attribute, as SNS envelopes (``Value``), Lambda's SQS events
    (``stringValue``) or SendMessage (``StringValue``) spell it."""
    value = (attributes or {}).get(name)
    if not isinstance(value, Mapping):
        return None
    text = value.get("Value", value.get("stringValue", value.get("StringValue")))
    return text if isinstance(text, str) and text else None


def clean_request_id(value: Any) -> str | None:
    """A usable request id, or None: a non-empty string of at most 256 characters, no NUL."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > REQUEST_ID_MAX_CHARS or "\x00" in value:
        return None
    return value


def status_report(
    request_id: str,
    state: str,
    *,
    stage: str,
    error: str | None = None,
    attempts: int | None = None,
    generated: int | None = None,
    collection: str | None = None,
    items: list[dict[str, str]] | None = None,
    submission_id: str | None = None,
) -> dict[str, Any]:
    """The message ItemGen publishes on the load topic to record ``state`` for a request."""
    if state not in REPORTED_STATES:
        raise ValueError(f"a status report says one of {sorted(REPORTED_STATES)}, not {state!r}")
    report: dict[str, Any] = {
        "type": STATUS_TYPE,
        "request_id": request_id,
        "state": state,
        "stage": stage,
    }
    for key, value in (
        ("error", error),
        ("attempts", attempts),
        ("generated", generated),
        ("collection", collection),
        ("items", items),
        ("submission_id", submission_id),
    ):
        if value is not None:
            report[key] = value
    return report


def is_status_report(obj: Any) -> bool:
    """Whether a load-topic message is a status report rather than a STAC document."""
    return isinstance(obj, dict) and obj.get("type") == STATUS_TYPE


def request_id_of(
    own: Any,
    sns_message_id: str | None,
    sns_attributes: Mapping[str, Any] | None,
    sqs_message_id: str,
    sqs_attributes: Mapping[str, Any] | None = None,
) -> str:
    """The id a message's request is known by in the ledger (see the module's docstring).

    The sender's own first: ``own`` (an item request's ``request_id`` field), then the
    ``request_id`` attribute on SNS or SQS; else the SNS MessageId, else the SQS messageId.
    An unusable given id (empty, too long, not a string) is passed over, not an error.
    """
    for candidate in (
        own,
        attribute_value(sns_attributes, REQUEST_ID_ATTRIBUTE),
        attribute_value(sqs_attributes, REQUEST_ID_ATTRIBUTE),
    ):
        if (found := clean_request_id(candidate)) is not None:
            return found
    return sns_message_id or sqs_message_id


def record_request_id(record: Mapping[str, Any], read_own: bool = False) -> str:
    """The ledger key of a Lambda SQS record, whatever its body holds (even a body that is not
    JSON: then its SQS messageId). ``read_own``: the message's ``request_id`` field counts (an
    item request's; a STAC document's fields are never read as one)."""
    from ingest_common.envelope import unwrap

    try:
        envelope = unwrap(record["body"])
    except Exception:  # a body that is not JSON still has an id: the record's
        envelope = None
    message = envelope.message if envelope is not None else None
    own = message.get(REQUEST_ID_ATTRIBUTE) if read_own and isinstance(message, dict) else None
    return request_id_of(
        own,
        envelope.sns_message_id if envelope else None,
        envelope.sns_attributes if envelope else None,
        record["messageId"],
        record.get("messageAttributes"),
    )


def submission_of(
    sns_attributes: Mapping[str, Any] | None, sqs_attributes: Mapping[str, Any] | None
) -> str | None:
    """The submission a message belongs to (the ``submission_id`` attribute), if any."""
    return clean_request_id(
        attribute_value(sns_attributes, SUBMISSION_ATTRIBUTE)
        or attribute_value(sqs_attributes, SUBMISSION_ATTRIBUTE)
    )


def record_submission(record: Mapping[str, Any]) -> str | None:
    """The submission of a Lambda SQS record, whatever its body holds."""
    from ingest_common.envelope import unwrap

    try:
        envelope = unwrap(record["body"])
    except Exception:
        envelope = None
    return submission_of(
        envelope.sns_attributes if envelope else None, record.get("messageAttributes")
    )


def receive_count(record: Mapping[str, Any]) -> int:
    """How often SQS has delivered the record, this time included (0 if it does not say)."""
    try:
        return int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 0)
    except (TypeError, ValueError):
        return 0
