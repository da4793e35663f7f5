"""Publish what the API accepted to the stages' topics, each object with its request id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest_api.core import Routed
from ingest_common.errors import IngestError
from ingest_common.ledger import REQUEST_ID_ATTRIBUTE
from ingest_common.sns_batches import BatchPublisher
from item_gen.publish import Publisher

GEN_WORKERS = 8
"""Requests are independent, so their batches go out from several threads: 2,000 requests
take about as long as 25 calls, well inside API Gateway's 29 s."""


@dataclass
class Published:
    """Each object's request id (None where SNS refused it), and why each refused one failed."""

    request_ids: list[str | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def new_request_id() -> str:
    """An id for an object its sender did not name."""
    return f"req-{uuid.uuid4().hex}"


class TopicPublisher:
    """Requests to the ItemGen topic, documents to the ItemLoad topic.

    Every object leaves with a ``request_id`` message attribute: its own, else one made here.
    The stages read that attribute whether SNS delivers raw (the default) or wrapped, so the id
    the API answers is the id the ledger records; SNS's MessageId never reaches a raw delivery.
    """

    def __init__(self, topics: dict[str, str], sns: Any, payloads: Publisher | None) -> None:
        self.topics = topics
        self.sns = sns
        self.payloads = payloads

    def _message(self, routed: Routed) -> str:
        if routed.stage == "load" and self.payloads is not None:
            return self.payloads.message_for(routed.obj)  # a pointer when over SNS's limit
        return json.dumps(routed.obj, separators=(",", ":"))

    def publish(self, objs: Sequence[Routed]) -> Published:
        """Publish every object; never raises for one object's failure.

        Documents go out in order from one thread, and an entry SNS refuses is not resent
        after the ones behind it (it is reported, for the caller to post again): two versions
        of one item in one post must reach ItemLoad in the order they were posted.
        """
        ids = [r.given_id or new_request_id() for r in objs]
        failed: dict[int, str] = {}
        for stage, workers, attempts in (("gen", GEN_WORKERS, 3), ("load", 1, 1)):
            indexed = [n for n, r in enumerate(objs) if r.stage == stage]
            if indexed:
                self._publish(stage, workers, attempts, indexed, objs, ids, failed)
        return Published(
            [None if n in failed else i for n, i in enumerate(ids)],
            [{"index": n, "reason": failed[n]} for n in sorted(failed)],
        )

    def _publish(
        self,
        stage: str,
        workers: int,
        attempts: int,
        indexed: list[int],
        objs: Sequence[Routed],
        ids: list[str],
        failed: dict[int, str],
    ) -> None:
        settled: set[int] = set()

        def refused(source: str, reason: str) -> None:
            failed[int(source)] = reason

        batches = BatchPublisher(
            self.sns,
            max_attempts=attempts,
            max_delay=2.0,
            workers=workers,
            on_error=refused,
            on_settled=lambda n: settled.add(int(n)),
        )
        topic = self.topics[stage]
        try:
            for n in indexed:
                try:
                    message = self._message(objs[n])
                except IngestError as e:  # too large with no bucket, or the bucket refused it
                    batches.fail(str(n), str(e))
                    continue
                batches.add(topic, message, str(n), attributes={REQUEST_ID_ATTRIBUTE: ids[n]})
            batches.close()
        except IngestError as e:  # the whole topic refused: nothing unsettled was published
            for n in indexed:
                if n not in settled:
                    failed.setdefault(n, f"not published: {e}")
