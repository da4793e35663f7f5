"""ItemLoad Lambda: SQS batch -> STAC documents -> one bulk load -> partial batch response."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ingest_common.envelope import unwrap
from item_load.core import paused_gc
from item_load.db import ConnectionCache
from item_load.fetch import HrefFetcher, HrefPolicy
from item_load.messages import Document, documents_from_message
from item_load.processor import BulkLoadProcessor
from item_load.settings import LoadSettings

settings = LoadSettings()
logger = Logger(service="item-load")
metrics = Metrics(namespace="stactools-ingest", service="item-load")
copy_config_to_registered_loggers(source_logger=logger, include={"item_load"})
connections = ConnectionCache(settings)
fetcher = HrefFetcher(HrefPolicy.from_settings(settings))
processor = BulkLoadProcessor(
    connections,
    settings.create_collections_if_missing,
    logger=logger,
    metrics=metrics,
    stats_interval=settings.partition_stats_interval_seconds,
)


def record_handler(record: SQSRecord) -> list[Document]:
    """Parse one record into its documents; raising fails this record alone."""
    envelope = unwrap(record.body, record.attributes.sent_timestamp)
    return documents_from_message(envelope.message, record.message_id, envelope.sent_at, fetcher)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the ItemLoad queue."""
    started = time.perf_counter()
    with paused_gc():
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    metrics.add_metric("BatchSeconds", MetricUnit.Seconds, time.perf_counter() - started)
    return response
