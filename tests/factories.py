"""Builders for STAC documents and AWS-shaped events (SQS records, SNS envelopes, S3 events)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# A rule only the database knows (a site's own trigger on items): nothing before the COPY
# can predict that it rejects an item whose id starts with "reject".
SITE_RULE = """
CREATE FUNCTION site_rule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id LIKE 'reject%' THEN
        RAISE EXCEPTION 'site_rule: item % is not allowed here', NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER site_rule BEFORE INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION site_rule();
"""


def collection(collection_id: str, **extra: Any) -> dict[str, Any]:
    """A valid STAC collection."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": f"test collection {collection_id}",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [["2000-01-01T00:00:00Z", None]]},
        },
        "links": [],
        **extra,
    }


COLL = "test-collection"
"""The collection ``item`` puts items in unless told otherwise."""
MONTHLY = "monthly"
"""A collection the ItemLoad tests partition by month."""


def item(
    item_id: str,
    collection_id: str | None = COLL,
    dt: str = "2020-06-01T00:00:00Z",
    n_assets: int = 2,
    x: float = 10.0,
) -> dict[str, Any]:
    """A valid STAC item with ``n_assets`` assets (12 makes a realistic ~2 KB item)."""
    doc: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x, 40.0], [x + 1, 40.0], [x + 1, 41.0], [x, 41.0], [x, 40.0]]],
        },
        "bbox": [x, 40.0, x + 1, 41.0],
        "properties": {"datetime": dt, "platform": "test"},
        "links": [],
        "assets": {
            f"B{n:02d}": {
                "href": f"s3://bucket/{collection_id}/{item_id}/B{n:02d}.tif",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "title": f"Band {n}",
            }
            for n in range(n_assets)
        },
    }
    if collection_id is not None:
        doc["collection"] = collection_id
    return doc


def sns_envelope(
    message: Any,
    timestamp: datetime | None = None,
    topic: str = "item-load",
    message_id: str | None = None,
    attributes: dict[str, str] | None = None,
) -> str:
    """The JSON body SQS receives from an SNS subscription without raw delivery; ``attributes``
    become string MessageAttributes, as SNS writes them into the envelope."""
    ts = (timestamp or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    extra = {}
    if attributes:
        extra["MessageAttributes"] = {
            k: {"Type": "String", "Value": v} for k, v in attributes.items()
        }
    return json.dumps(
        {
            **extra,
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": f"arn:aws:sns:us-east-1:123456789012:{topic}",
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": ts,
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def sqs_record(body: str, message_id: str | None = None, sent_ms: int | None = None) -> dict:
    """An SQS record as Lambda's event source mapping delivers it."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent_ms if sent_ms is not None else int(time.time() * 1000)),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:item-load-queue",
        "awsRegion": "us-east-1",
    }


def sqs_event(records: list[dict]) -> dict:
    """A Lambda SQS event."""
    return {"Records": records}


def s3_event(bucket: str, key: str, event_name: str = "ObjectCreated:Put") -> dict:
    """An S3 event notification (key URL-encoded, as S3 sends it)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": event_name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": 1024},
                },
            }
        ]
    }


@dataclass
class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "test-function"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def failed_ids(response: dict) -> set[str]:
    """Message ids a partial batch response reports as failed."""
    return {f["itemIdentifier"] for f in response["batchItemFailures"]}


def logged_reasons(caplog: Any, message_id: str) -> list[str]:
    """The reasons logged for one message, as an operator reads them in the logs."""
    return [r.reason for r in caplog.records if getattr(r, "message_id", None) == message_id]


def fake_uvx(tmp_path: Path, body: str) -> Path:
    """An executable standing in for uvx: ``$PIDS`` collects the pids of what it leaves behind."""
    script = tmp_path / "uvx"
    script.write_text(f"#!/bin/bash\nPIDS={tmp_path}/pids\nfor last; do :; done\n{body}\n")
    script.chmod(0o755)
    return script


class ByteLimitedSns:
    """moto's SNS with the limit it leaves out: a PublishBatch call of over 256 KiB in all
    (messages and attributes) is refused, as SNS refuses it (BatchRequestTooLong)."""

    def __init__(self, sns) -> None:
        self.sns = sns

    def publish_batch(self, **kwargs):
        from botocore.exceptions import ClientError

        size = sum(
            len(e["Message"].encode())
            + sum(
                len(k) + len(v["StringValue"]) + 6
                for k, v in e.get("MessageAttributes", {}).items()
            )
            for e in kwargs["PublishBatchRequestEntries"]
        )
        if size > 256 * 1024:
            error = {"Error": {"Code": "BatchRequestTooLong", "Message": f"{size} bytes"}}
            raise ClientError(error, "PublishBatch")
        return self.sns.publish_batch(**kwargs)
