"""A Powertools batch processor that parses records one by one and loads them in one go.

The record handler only parses (so a malformed record fails alone, the Powertools way); the
clean-up step then runs one bulk load for every parsed record and moves the records whose
documents pgstac rejected from the success list to the failure list. Records that can never
succeed (a PermanentError while parsing, a permanent load Failure) go to the DLQ at once.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ingest_common.dead_letter import DeadLetteringProcessor, DeadLetterQueue
from ingest_common.errors import IngestError
from ingest_common.ledger import (
    LOAD_STAGE,
    receive_count,
    record_request_id,
    record_submission,
)
from item_load import ledger
from item_load.core import BatchLoader, LoadOutcome
from item_load.db import ConnectionCache, is_outage
from item_load.errors import DatabaseUnavailable
from item_load.messages import Document
from item_load.notify import Change, SnsNotifier


class RecordRejected(IngestError):
    """Raised into Powertools' failure bookkeeping for a record whose documents were rejected."""


class BulkLoadProcessor(DeadLetteringProcessor):
    """Collects parsed documents per record, loads them all in ``_clean``, reports per record."""

    def __init__(
        self,
        connections: ConnectionCache,
        create_collections_if_missing: bool,
        logger: Any = None,
        metrics: Metrics | None = None,
        stats_interval: float = 60.0,
        dead_letters: DeadLetterQueue | None = None,
        toast_compression: str = "lz4",
        record_ledger: bool = True,
        max_receives: int | None = None,
        notifier: SnsNotifier | None = None,
    ) -> None:
        super().__init__(dead_letters or DeadLetterQueue(None, LOAD_STAGE), logger)
        self.connections = connections
        self.create_collections_if_missing = create_collections_if_missing
        self.stats_interval = stats_interval
        self.toast_compression = toast_compression
        self.record_ledger = record_ledger
        self.max_receives = max_receives
        self.notifier = notifier
        self.metrics = metrics
        self._parsed: list[tuple[dict[str, Any], list[Document]]] = []
        self.batch_loader: BatchLoader | None = None

    def _loader(self) -> BatchLoader:
        """The BatchLoader of the current connection: built once per connection, not per batch
        (it checks the pgstac version and holds pypgstac's Loader and its caches)."""
        conn = self.connections.get()
        if self.batch_loader is None or self.batch_loader.conn is not conn:
            self.batch_loader = BatchLoader(
                conn, self.create_collections_if_missing, self.stats_interval
            )
        self.batch_loader.create_collections_if_missing = self.create_collections_if_missing
        self.batch_loader.record_ledger = self.record_ledger
        self.batch_loader.writer.notify = self.notifier is not None
        self.batch_loader.writer.stats_interval = self.stats_interval
        self.batch_loader.writer.toast_compression = self.toast_compression
        return self.batch_loader

    def _prepare(self) -> None:
        super()._prepare()
        self._parsed = []

    def success_handler(self, record: Any, result: Any) -> Any:
        # Powertools hands the raw record dict here (and the data class to failure_handler).
        self._parsed.append((record, result))
        return super().success_handler(record, result)

    def failure_handler(self, record: Any, exception: Any) -> Any:
        self.log.warning(
            "record rejected",
            extra={"message_id": record.message_id, "reason": str(exception[1])},
        )
        return super().failure_handler(record, exception)

    def _fail(self, records: list[dict[str, Any]], reasons: list[str]) -> None:
        """Move records the load rejected from the success list to Powertools' failure list.

        ``failure_handler`` takes an exc_info triple (Powertools 3's ``ExceptionInfo``; the
        packages pin ``<4``); one without a traceback is built directly, no raise needed.
        """
        failed_ids = {r["messageId"] for r in records}
        self.success_messages = [
            m for m in self.success_messages if m["messageId"] not in failed_ids
        ]
        for record, reason in zip(records, reasons, strict=True):
            super().failure_handler(
                SQSRecord(record), (RecordRejected, RecordRejected(reason), None)
            )

    def _notify(self, changes: list[Change]) -> None:
        """Publish post-ingest notifications for what committed; failures are only counted."""
        if self.notifier is None or not changes:
            return
        published, failed = self.notifier.send(changes)
        if self.metrics is not None:
            self.metrics.add_metric("PostIngestPublished", MetricUnit.Count, published)
            self.metrics.add_metric("PostIngestFailed", MetricUnit.Count, failed)

    def _record_failures(self) -> None:
        """Write the batch's failures to the ledger, after SQS and the DLQ have them.

        The ledger is how a person learns what happened, not how a record is kept: a ledger
        write that fails is logged and the batch's response stands.
        """
        entries = [
            ledger.failure(
                record_request_id(record),
                LOAD_STAGE,
                reason,
                dead=dead,
                attempts=receive_count(record),
                max_receives=self.max_receives,
                submission_id=record_submission(record),
            )
            for record, reason, dead in self.failed_records
        ]
        try:
            conn = self.connections.get()
            with conn.transaction():
                ledger.record(conn, entries)
        except Exception as e:
            if isinstance(e, DatabaseUnavailable) or is_outage(e):
                self.connections.discard()
                self.batch_loader = None
            self.log.error(
                "could not record %d failures in the ledger",
                len(entries),
                extra={"reason": str(e), "request_ids": [x.request_id for x in entries][:100]},
            )

    def _clean(self) -> None:
        docs = [doc for _, record_docs in self._parsed for doc in record_docs]
        try:
            outcome = self._loader().load(docs) if docs else LoadOutcome()
        except DatabaseUnavailable as e:
            # Nothing here is known to be committed for sure: let SQS deliver every record again.
            # (What the writer saw commit before the outage is announced: a redelivery finds
            # those items unchanged and would say nothing.)
            if self.batch_loader is not None:
                self._notify(self.batch_loader.writer.changes)
                self.batch_loader.writer.changes = []
            self.connections.discard()
            self.batch_loader = None
            self.log.error(
                "database unavailable; failing the whole batch", extra={"reason": str(e)}
            )
            records = [record for record, _ in self._parsed]
            self._fail(records, [str(e)] * len(records))
            outcome = LoadOutcome()
        else:
            rejected = [
                (record, outcome.failures[record["messageId"]])
                for record, _ in self._parsed
                if record["messageId"] in outcome.failures
            ]
            if rejected:
                self._fail([r for r, _ in rejected], [f.reason for _, f in rejected])
            for record, failure in rejected:
                if failure.permanent:
                    self.dead_letter(record, failure.reason)
        self._notify(outcome.changes)
        self._parsed = []  # free the batch's documents now, not at the next invocation
        super()._clean()  # dead-letters, then reports what is left to SQS
        if self.record_ledger and self.failed_records:
            self._record_failures()
        if self.metrics is not None:
            self.metrics.add_metric("ItemsLoaded", MetricUnit.Count, outcome.items_loaded)
            self.metrics.add_metric("ItemsDeleted", MetricUnit.Count, outcome.items_deleted)
            self.metrics.add_metric(
                "CollectionsLoaded", MetricUnit.Count, outcome.collections_loaded
            )
            self.metrics.add_metric("RecordsFailed", MetricUnit.Count, len(self.fail_messages))
            self.metrics.add_metric(
                "RecordsDeadLettered", MetricUnit.Count, len(self.dead_lettered)
            )
