"""ItemGen Lambda: SQS batch of requests -> stactools -> documents on the ItemLoad topic."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ingest_common.dead_letter import DeadLetterQueue
from ingest_common.envelope import unwrap
from ingest_common.ledger import (
    GEN_STAGE,
    GENERATED,
    receive_count,
    request_id_of,
    status_report,
    submission_of,
)
from item_gen.core import generate
from item_gen.models import parse_request
from item_gen.publish import Publisher
from item_gen.reporting import ReportingProcessor
from item_gen.settings import GenSettings
from item_gen.warm import runner_for

settings = GenSettings()
logger = Logger(service="item-gen")
metrics = Metrics(namespace="stactools-ingest", service="item-gen")
copy_config_to_registered_loggers(source_logger=logger, include={"item_gen"})


@cache
def publisher() -> Publisher:
    """Created on first use so importing the handler needs neither AWS nor the topic."""
    if not settings.item_load_topic_arn:
        raise RuntimeError("ITEM_LOAD_TOPIC_ARN is not set; the ItemGen function cannot publish")
    s3 = boto3.client("s3") if settings.payload_bucket else None
    return Publisher(settings.item_load_topic_arn, settings.payload_bucket, boto3.client("sns"), s3)


# Requests that can never succeed (PermanentError) go to the DLQ at once, not after 5 receives;
# every failure is then reported to the ledger.
processor = ReportingProcessor(
    DeadLetterQueue(settings.dead_letter_queue_url, GEN_STAGE),
    publisher,
    enabled=settings.ledger,
    max_receives=settings.max_receives,
)


def record_handler(record: SQSRecord) -> str:
    """One request: parse, generate, publish; raising fails this record alone."""
    context = {"message_id": record.message_id}
    try:
        envelope = unwrap(record.body, record.attributes.sent_timestamp)
        request = parse_request(envelope.message)
        request_id = request_id_of(
            request.request_id,
            envelope.sns_message_id,
            envelope.sns_attributes,
            record.message_id,
            record.raw_event.get("messageAttributes"),
        )
        context["request_id"] = request_id
        submission = submission_of(
            envelope.sns_attributes, record.raw_event.get("messageAttributes")
        )
        doc = generate(request, settings, runner_for(settings))
        report = None
        if settings.ledger:
            report = status_report(
                request_id,
                GENERATED,
                stage=GEN_STAGE,
                generated=1,
                attempts=receive_count(record.raw_event),
                collection=doc.get("collection") if doc.get("type") == "Feature" else doc.get("id"),
                submission_id=submission,
            )
        message_id = publisher().publish(doc, request_id, report, submission)
    except Exception as e:
        metrics.add_metric("RequestsFailed", MetricUnit.Count, 1)
        logger.warning("request failed", extra={**context, "reason": str(e)})
        raise
    metrics.add_metric("ItemsGenerated", MetricUnit.Count, 1)
    logger.info(
        "published",
        extra={**context, "stac_id": doc.get("id"), "collection": doc.get("collection")},
    )
    return message_id


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the ItemGen queue."""
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
