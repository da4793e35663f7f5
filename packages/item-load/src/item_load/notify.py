"""Post-ingest notifications: one message per item a load created or changed, after it committed.

As stac-server's post-ingest topic does, so that downstream systems (caches, mirrors, search
indexes, a person's e-mail filter) can follow the catalog without polling it. A message is
``{"action": "created"|"updated", "collection", "id", "request_id", "datetime"}`` with the message
attributes ``collection`` and ``action`` for subscription filter policies. Items a load left as
they were (the same content again, or an older message) are not changes and say nothing.

Notifications go out after the items' transaction committed and never decide a record's fate:
a publish that fails is retried a few times, then logged and counted, and the items stay loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

logger = logging.getLogger(__name__)

CREATED, UPDATED = "created", "updated"
SNS_BATCH = 10


@dataclass(frozen=True, slots=True)
class Change:
    """An item a load created or changed (its content differs from what pgstac held)."""

    action: str
    collection: str
    id: str
    request_id: str | None
    datetime: str | None

    def message(self) -> dict[str, Any]:
        """The notification's body."""
        return asdict(self)


def ndjson(changes: Sequence[Change]) -> bytes:
    """The notifications as NDJSON lines (``run --events``)."""
    return b"".join(orjson.dumps(c.message()) + b"\n" for c in changes)


class SnsNotifier:
    """Publishes changes to the post-ingest topic, 10 per PublishBatch call."""

    def __init__(self, topic_arn: str, sns: Any = None, attempts: int = 3) -> None:
        self.topic_arn = topic_arn
        self._sns = sns
        self.attempts = attempts

    @property
    def sns(self) -> Any:
        """The SNS client, made on first use."""
        if self._sns is None:
            import boto3

            self._sns = boto3.client("sns")
        return self._sns

    def send(self, changes: Sequence[Change]) -> tuple[int, int]:
        """Publish ``changes``; returns (published, given up on). Never raises."""
        published = failed = 0
        for start in range(0, len(changes), SNS_BATCH):
            ok, lost = self._send_group(changes[start : start + SNS_BATCH])
            published += ok
            failed += len(lost)
            if lost:
                logger.error(
                    "post-ingest notifications not published after %d attempts",
                    self.attempts,
                    extra={
                        "topic": self.topic_arn,
                        "items": [f"{c.collection}/{c.id}" for c in lost],
                    },
                )
        return published, failed

    def _send_group(self, group: Sequence[Change]) -> tuple[int, list[Change]]:
        pending = {str(n): change for n, change in enumerate(group)}
        refused: list[Change] = []
        published = 0
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(0.2 * 2**attempt)
            entries = [
                {
                    "Id": n,
                    "Message": orjson.dumps(change.message()).decode(),
                    "MessageAttributes": {
                        "collection": {"DataType": "String", "StringValue": change.collection},
                        "action": {"DataType": "String", "StringValue": change.action},
                    },
                }
                for n, change in pending.items()
            ]
            try:
                response = self.sns.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=entries
                )
            except Exception as e:  # throttling, a network blip: the whole group again
                logger.warning("post-ingest publish failed: %s", e)
                continue
            for ok in response.get("Successful", []):
                pending.pop(ok["Id"], None)
                published += 1
            for bad in response.get("Failed", []):
                if bad.get("SenderFault", False) and bad["Id"] in pending:
                    # The entry itself is refused (too large, bad attribute): no retry helps.
                    refused.append(pending.pop(bad["Id"]))
                    logger.error("SNS refused a post-ingest notification: %s", bad.get("Message"))
            if not pending:
                break
        return published, refused + list(pending.values())
