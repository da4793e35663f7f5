"""Publish generated documents to the load topic, via S3 when SNS would refuse their size."""

from __future__ import annotations

import json
import uuid
from typing import Any

from ingest_common.envelope import SNS_MAX_BYTES as SNS_LIMIT_BYTES
from item_gen.errors import PayloadTooLarge, PublishFailed

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

    def publish(self, doc: dict) -> str:
        """Publish one document; returns the SNS message id."""
        message = self.message_for(doc)
        try:
            return self.sns.publish(TopicArn=self.topic_arn, Message=message)["MessageId"]
        except Exception as e:
            raise PublishFailed(
                f"could not publish {doc.get('type')} {doc.get('id')} to {self.topic_arn}: {e}"
            ) from e
