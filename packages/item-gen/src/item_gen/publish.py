"""Publish generated documents to the load topic, via S3 when SNS would refuse their size."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from ingest_common.envelope import SNS_MAX_BYTES as SNS_LIMIT_BYTES
from ingest_common.ledger import REQUEST_ID_ATTRIBUTE, SUBMISSION_ATTRIBUTE
from ingest_common.sns_batches import attributes_size, string_attributes
from item_gen.errors import PayloadTooLarge, PublishFailed

logger = logging.getLogger(__name__)

# The SNS limit counts message attributes too; keep a margin for the ones we add.
SNS_MAX_BYTES = SNS_LIMIT_BYTES - 2048


class Publisher:
    """Sends documents to the ItemLoad topic; oversized ones go to the payload bucket first."""

    def __init__(self, topic_arn: str, bucket: str | None, sns: Any, s3: Any = None) -> None:
        self.topic_arn = topic_arn
        self.bucket = bucket
        self.sns = sns
        self.s3 = s3

    def message_for(self, doc: dict) -> str:
        """The message to publish: the document itself, or a pointer to where it was stored."""
        body = json.dumps(doc, separators=(",", ":"))
        if len(body.encode()) <= SNS_MAX_BYTES:
            return body
        what = f"{doc.get('type')} {doc.get('id')} ({len(body.encode())} bytes)"
        if not self.bucket or self.s3 is None:
            raise PayloadTooLarge(
                f"{what} is over SNS's 256 KiB limit and PAYLOAD_BUCKET is not set; "
                "set PAYLOAD_BUCKET so large items travel through S3"
            )
        prefix = doc.get("collection") or doc.get("id")
        key = f"payloads/{prefix}/{doc.get('id')}-{uuid.uuid4().hex}.json"
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json"
            )
        except Exception as e:
            raise PublishFailed(f"could not store {what} in s3://{self.bucket}/{key}: {e}") from e
        return json.dumps({"href": f"s3://{self.bucket}/{key}"})

    def publish(
        self,
        doc: dict,
        request_id: str | None = None,
        report: dict | None = None,
        submission_id: str | None = None,
    ) -> str:
        """Publish one document; returns the SNS message id.

        ``request_id`` (and ``submission_id``) travel as the message attributes the load stage
        records the document under. ``report`` (a status report for the ledger) goes in the same
        PublishBatch call, or in one after it when the two would be over 256 KiB; it is best
        effort: a report SNS refuses is logged, the document's publish stands.
        """
        message = self.message_for(doc)
        attributes = string_attributes(
            {REQUEST_ID_ATTRIBUTE: request_id, SUBMISSION_ATTRIBUTE: submission_id}
        )
        entries = [{"Id": "doc", "Message": message, "MessageAttributes": attributes}]
        later = []  # the report, when the two would be over one call's 256 KiB
        if report is not None:
            text = json.dumps(report, separators=(",", ":"))
            size = len(message.encode()) + len(text.encode()) + attributes_size(attributes)
            target = entries if size <= SNS_LIMIT_BYTES else later
            target.append({"Id": "report", "Message": text})
        what = f"{doc.get('type')} {doc.get('id')}"
        try:
            response = self.sns.publish_batch(
                TopicArn=self.topic_arn, PublishBatchRequestEntries=entries
            )
        except Exception as e:
            raise PublishFailed(f"could not publish {what} to {self.topic_arn}: {e}") from e
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        if later and "doc" not in failed:  # a report for an item SNS refused would be untrue
            try:
                response_later = self.sns.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=later
                )
                failed.update((f["Id"], f) for f in response_later.get("Failed", []))
            except Exception as e:
                failed["report"] = {"Message": str(e)}
        if "doc" in failed:
            f = failed["doc"]
            raise PublishFailed(
                f"SNS refused {what} on {self.topic_arn}: {f.get('Code')} {f.get('Message')}"
            )
        if "report" in failed:
            logger.warning(
                "SNS refused the ledger's status report for request %s: %s",
                request_id,
                failed["report"].get("Message"),
            )
        return next(s["MessageId"] for s in response["Successful"] if s["Id"] == "doc")

    def report(self, reports: list[dict]) -> int:
        """Publish status reports (best effort, 10 per call); how many SNS accepted."""
        accepted = 0
        for start in range(0, len(reports), 10):
            group = reports[start : start + 10]
            entries = [
                {"Id": str(n), "Message": json.dumps(r, separators=(",", ":"))}
                for n, r in enumerate(group)
            ]
            try:
                response = self.sns.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=entries
                )
            except Exception as e:
                logger.error("could not publish %d status reports: %s", len(group), e)
                continue
            accepted += len(response.get("Successful", []))
            for f in response.get("Failed", []):
                logger.warning("SNS refused a status report: %s", f.get("Message"))
        return accepted
