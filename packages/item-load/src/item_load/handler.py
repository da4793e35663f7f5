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

from ingest_common.dead_letter import DeadLetterQueue
from ingest_common.envelope import unwrap
from ingest_common.ledger import LOAD_STAGE, receive_count, request_id_of, submission_of
from item_load.core import paused_gc
from item_load.db import ConnectionCache
from item_load.errors import DatabaseUnavailable
from item_load.fetch import HrefFetcher, HrefPolicy
from item_load.maintenance import is_maintenance, prune_ledger, refresh_skipped_stats
from item_load.messages import BatchReader, Document, Parsed, parse_message
from item_load.notify import SnsNotifier
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
    dead_letters=DeadLetterQueue(settings.dead_letter_queue_url, LOAD_STAGE),
    toast_compression=settings.toast_compression,
    record_ledger=settings.ledger,
    max_receives=settings.max_receives,
    notifier=SnsNotifier(settings.post_ingest_topic_arn)
    if settings.post_ingest_topic_arn
    else None,
)


# The fetcher is looked up per href so tests can swap the module's ``fetcher``.
reader = BatchReader(lambda href: fetcher(href), settings.href_fetch_workers)


def parse_record(message_id: str, record: dict[str, Any]) -> Parsed:
    """Decode one SQS record's message without reading any href."""
    envelope = unwrap(record["body"], record.get("attributes", {}).get("SentTimestamp"))
    request_id = request_id_of(
        None,
        envelope.sns_message_id,
        envelope.sns_attributes,
        message_id,
        record.get("messageAttributes"),
    )
    return parse_message(
        envelope.message,
        message_id,
        envelope.sent_at,
        request_id,
        receive_count(record),
        submission_of(envelope.sns_attributes, record.get("messageAttributes")),
    )


def read_batch(records: list[dict[str, Any]], context: LambdaContext) -> None:
    """Parse the whole batch, then read all its hrefs at once (before any record is handled).

    Reads start only while the invocation keeps two href time caps in hand: one for the reads
    in flight, one for the load; hrefs left over are retried by SQS instead of timing out all.
    """
    remaining = context.get_remaining_time_in_millis() / 1000.0
    cap = settings.href_timeout_seconds
    window = max(remaining - 2 * cap, min(cap, remaining / 2))
    reader.read(((r["messageId"], r) for r in records), parse_record, start_window=window)


def record_handler(record: SQSRecord) -> list[Document]:
    """The record's documents as ``read_batch`` found them; raising fails this record alone."""
    return reader.documents(record.message_id)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for the ItemLoad queue (and its maintenance schedule)."""
    if is_maintenance(event):
        try:
            conn = connections.get()
            refreshed = refresh_skipped_stats(conn, settings.partition_stats_interval_seconds)
            pruned = prune_ledger(conn, settings.ledger_retention_days)
        except DatabaseUnavailable:
            connections.discard()  # the next call starts on a fresh connection
            raise
        metrics.add_metric("PartitionsRefreshed", MetricUnit.Count, len(refreshed))
        metrics.add_metric("LedgerRowsExpired", MetricUnit.Count, pruned)
        return {"refreshed_partitions": refreshed, "ledger_rows_expired": pruned}
    started = time.perf_counter()
    with paused_gc():
        read_batch(event.get("Records") or [], context)
        try:
            response = process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        finally:
            reader.clear()
    metrics.add_metric("BatchSeconds", MetricUnit.Seconds, time.perf_counter() - started)
    return response
