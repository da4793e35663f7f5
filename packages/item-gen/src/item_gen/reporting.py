"""ItemGen's batch processor: dead-letters what can never succeed, then tells the ledger.

ItemGen has no database. What it decided about each failed request (still retrying, or
dead-lettered) is published as a status report on the load topic, after the DLQ has the
record, for ItemLoad to write to the ledger (``ingest_common.ledger``). Reports are best
effort: a report that cannot be published is logged, and the batch response stands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ingest_common.dead_letter import DeadLetteringProcessor, DeadLetterQueue
from ingest_common.ledger import (
    DEAD_LETTERED,
    FAILED,
    GEN_STAGE,
    receive_count,
    record_request_id,
    record_submission,
    status_report,
)
from item_gen.publish import Publisher

logger = logging.getLogger(__name__)


def failure_report(
    record: dict[str, Any], reason: str, dead: bool, max_receives: int | None
) -> dict[str, Any]:
    """The status report for a request that failed: dead-lettered by us or by SQS's redrive
    (its last receive), else failed and retrying."""
    attempts = receive_count(record)
    if not dead and max_receives is not None and attempts >= max_receives:
        dead = True
        reason = (
            f"{reason} (failed on all {attempts} receives: the queue moves it to the "
            "dead-letter queue)"
        )
    return status_report(
        record_request_id(record, read_own=True),
        DEAD_LETTERED if dead else FAILED,
        stage=GEN_STAGE,
        error=reason[:4000],
        attempts=attempts,
        submission_id=record_submission(record),
    )


class ReportingProcessor(DeadLetteringProcessor):
    """Powertools' SQS batch processor that also reports failures to the ledger."""

    def __init__(
        self,
        dead_letters: DeadLetterQueue,
        publisher: Callable[[], Publisher],
        enabled: bool = True,
        max_receives: int | None = None,
    ) -> None:
        super().__init__(dead_letters)
        self.publisher = publisher
        self.enabled = enabled
        self.max_receives = max_receives

    def _clean(self) -> None:
        super()._clean()
        if not self.enabled or not self.failed_records:
            return
        reports = [
            failure_report(record, reason, dead, self.max_receives)
            for record, reason, dead in self.failed_records
        ]
        try:
            self.publisher().report(reports)
        except Exception as e:  # no topic configured: the failures still stand
            logger.error("could not report %d failures to the ledger: %s", len(reports), e)
