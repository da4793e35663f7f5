"""Publish what the API accepted to the stages' topics, in SNS batches, keeping the order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest_api.core import Routed
from ingest_common.ledger import REQUEST_ID_ATTRIBUTE
from item_gen.publish import Publisher

SNS_BATCH = 10


@dataclass
class Published:
    """Each object's request id (None where SNS refused it), and why each refused one failed."""

    request_ids: list[str | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


class TopicPublisher:
    """Requests to the ItemGen topic, documents to the ItemLoad topic.

    A request's id is its own ``request_id`` (sent as the message attribute too), else the SNS
    MessageId, which is what the stages then record it under.
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
        """Publish every object; never raises for one object's failure."""
        out = Published([None] * len(objs))
        for stage in ("gen", "load"):
            indexed = [(n, r) for n, r in enumerate(objs) if r.stage == stage]
            for start in range(0, len(indexed), SNS_BATCH):
                self._batch(stage, indexed[start : start + SNS_BATCH], out)
        return out

    def _batch(self, stage: str, group: list[tuple[int, Routed]], out: Published) -> None:
        entries = []
        for n, routed in group:
            entry: dict[str, Any] = {"Id": str(n), "Message": self._message(routed)}
            if routed.given_id:
                entry["MessageAttributes"] = {
                    REQUEST_ID_ATTRIBUTE: {"DataType": "String", "StringValue": routed.given_id}
                }
            entries.append(entry)
        try:
            response = self.sns.publish_batch(
                TopicArn=self.topics[stage], PublishBatchRequestEntries=entries
            )
        except Exception as e:
            out.errors += [{"index": n, "reason": f"not published: {e}"} for n, _ in group]
            return
        given = dict(group)
        for ok in response.get("Successful", []):
            n = int(ok["Id"])
            out.request_ids[n] = given[n].given_id or ok["MessageId"]
        for bad in response.get("Failed", []):
            out.errors.append(
                {"index": int(bad["Id"]), "reason": f"SNS refused it: {bad.get('Message')}"}
            )
