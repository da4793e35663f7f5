"""``submit``: publish requests and STAC documents from JSON/NDJSON files to a deployed pipeline."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click

from ingest_common.errors import IngestError, PermanentError
from ingest_common.ledger import SUBMISSION_ATTRIBUTE, new_submission_id
from ingest_common.sns_batches import BatchPublisher, PublishSummary
from item_gen.publish import SNS_MAX_BYTES as PAYLOAD_THRESHOLD
from item_gen.publish import Publisher
from stactools_ingest.aws_publish import route, sns_client
from stactools_ingest.aws_stack import STACK_HELP, client, output, resolve_stack
from stactools_ingest.checkpoint import Checkpoint, CheckpointMismatch, Row
from stactools_ingest.inputs import InputProblem, InputRecord, check_files, read_inputs
from stactools_ingest.progress import eta

PROGRESS_EVERY_SECONDS = 5.0


class NotAllPublished(IngestError):
    """Some inputs were not published; each was reported with its file and line above."""


class _Display:
    """Progress and per-input errors: a rich bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int | None = None) -> None:
        self.tty = sys.stderr.isatty()
        self.total = total  # inputs to publish, when known: a bar and an ETA
        self._progress: Any = None
        self._started = self._last = time.monotonic()

    def __enter__(self) -> _Display:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                *([BarColumn()] if self.total is not None else []),
                TextColumn("published {task.fields[published]}  failed {task.fields[failed]}"),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TimeElapsedColumn(),
                *([TimeRemainingColumn()] if self.total is not None else []),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "publish", total=self.total, published=0, failed=0, rate=0.0
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def error(self, source: str, reason: str) -> None:
        """Report one input that was not published."""
        if self._progress is not None:
            self._progress.console.print(f"{source}: {reason}", markup=False, highlight=False)
        else:
            click.echo(f"{source}: {reason}", err=True)

    def progress(self, summary: PublishSummary) -> None:
        """Update the bar, or log a line every few seconds."""
        settled = summary.published + summary.failed
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=settled,
                published=summary.published,
                failed=summary.failed,
                rate=summary.rate,
            )
        elif time.monotonic() - self._last >= PROGRESS_EVERY_SECONDS:
            self._last = time.monotonic()
            if self.total is None:
                click.echo(
                    f"published {summary.published}, failed {summary.failed} "
                    f"({summary.rate:.0f}/s)",
                    err=True,
                )
            else:
                left = eta(settled, self.total, self._last - self._started)
                click.echo(
                    f"published {summary.published} of {self.total}, failed {summary.failed} "
                    f"({summary.rate:.0f}/s, {left})",
                    err=True,
                )


def publish_documents(
    documents: Iterable[InputRecord | InputProblem],
    outputs: dict[str, str],
    sns: Any,
    *,
    as_json: bool = False,
    workers: int = 1,
    on_settled: Callable[[int], None] | None = None,
    total: int | None = None,
    submission_id: str | None = None,
) -> PublishSummary:
    """Route each document to its topic, publish in batches, print the summary, fail if any failed.

    Shared by ``submit``, ``inventory``, ``crawl`` and ``dataset run``: requests go to the ItemGen
    topic, STAC documents to the ItemLoad topic; an input that is malformed or invalid is
    reported by source and skipped. ``workers`` > 1 sends batches in parallel, out of input
    order: ``submit`` keeps one, so a later line's version of an item is also published later
    and wins. ``on_settled(n)`` is called once the ``n``-th input (from 0) is published or
    reported, after the last of its messages; ``total`` (inputs, when known) adds a bar and an
    ETA to the progress. Every message carries the attribute ``submission_id`` (a new one unless
    given), which the ledger keeps: ``status --submission ID`` counts the whole submission.
    """
    submission_id = submission_id or new_submission_id()
    topics = {
        "gen": output(outputs, "ItemGenSNSTopicArn"),
        "load": output(outputs, "ItemLoadTopicArn"),
    }
    # A STAC document over SNS's limit goes to the stack's payload bucket (which ItemLoad reads)
    # and travels as {"href": "s3://…"}, as ItemGen sends large items; its publisher (and S3
    # client) is made when a document first needs it. A stack without the bucket (an older
    # deployment) reports such documents as too large.
    bucket = outputs.get("PayloadBucketName")
    payloads: Publisher | None = None
    outstanding: dict[int, int] = {}  # messages of a split input not settled yet
    lock = threading.Lock()

    def settled(n: int) -> None:
        with lock:
            left = outstanding.pop(n, 1) - 1
            if left:
                outstanding[n] = left
        if not left and on_settled is not None:
            on_settled(n)

    with _Display(total) as display:
        publisher = BatchPublisher(
            sns,
            on_error=display.error,
            on_progress=display.progress,
            workers=workers,
            on_settled=settled,
            attributes={SUBMISSION_ATTRIBUTE: submission_id},
        )
        for n, record in enumerate(documents):
            if isinstance(record, InputProblem):
                publisher.fail(record.source, record.reason, n)
                continue
            try:
                routed = route(record.obj)
            except PermanentError as e:
                publisher.fail(record.source, str(e), n)
                continue
            if bucket and len(routed) == 1:
                stage, message = routed[0]
                if stage == "load" and len(message.encode()) > PAYLOAD_THRESHOLD:
                    if payloads is None:
                        payloads = Publisher(topics["load"], bucket, sns=None, s3=client("s3"))
                    try:
                        routed = [(stage, payloads.message_for(record.obj))]
                    except IngestError as e:
                        publisher.fail(record.source, str(e), n)
                        continue
            if len(routed) > 1:
                with lock:
                    outstanding[n] = len(routed)
            for stage, message in routed:
                publisher.add(topics[stage], message, record.source, n)
        summary = publisher.close()
    summary.submission_id = submission_id
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        click.echo(
            f"published {summary.published}, failed {summary.failed} "
            f"in {summary.seconds:.1f} s ({summary.rate:.1f}/s); submission {submission_id} "
            f"(stactools-ingest status --submission {submission_id} --stack "
            f"{getattr(outputs, 'stack_name', 'NAME')})"
        )
    if summary.failed:
        raise NotAllPublished(
            f"{summary.failed} input(s) not published (each reported above with its file and line)"
        )
    return summary


def publish_resumably(
    rows: Callable[[int], Iterable[Row]],
    checkpoint: Checkpoint,
    outputs: dict[str, str],
    sns: Any,
    *,
    as_json: bool = False,
    workers: int = 1,
    total: int | None = None,
) -> None:
    """``publish_documents`` over a backfill that a checkpoint lets a rerun continue.

    ``rows(n)`` yields the backfill's rows in their fixed order, the first ``n`` (submitted
    before) without their records. Their keys are checked against the checkpoint first: a source
    that changed before that point stops the resume (CheckpointMismatch) before anything is
    sent. Shared by ``inventory``, ``crawl`` and ``dataset run``.
    """
    if checkpoint.finished:
        click.echo(
            f"already submitted in full (checkpoint {checkpoint.path}); "
            "delete it, or pass --no-checkpoint, to submit again",
            err=True,
        )
        return
    stream = iter(rows(checkpoint.done))
    checkpoint.verify(stream)
    start = checkpoint.done
    if start:
        click.echo(f"resuming after {start} rows (checkpoint {checkpoint.path})", err=True)
    keys: dict[int, str] = {}  # the key of each row read and not yet settled

    def records() -> Iterator[InputRecord | InputProblem]:
        for n, row in enumerate(stream):
            if row.record is None:  # a producer that skipped past the checkpoint's rows
                raise CheckpointMismatch(f"row {start + n} ({row.key}) came without its record")
            keys[n] = row.key
            yield row.record

    def settled(n: int) -> None:
        checkpoint.settle(start + n, keys.pop(n))

    publish_documents(
        records(),
        outputs,
        sns,
        as_json=as_json,
        workers=workers,
        on_settled=settled,
        total=None if total is None else max(0, total - start),
        submission_id=checkpoint.submission_id,  # a resumed backfill stays one submission
    )
    checkpoint.finish()


@click.command("submit")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--stack", "stack_name", required=True, metavar="NAME", help=STACK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def submit(files: tuple[str, ...], stack_name: str, as_json: bool) -> None:
    """Publish requests (to ItemGen) and STAC documents (to ItemLoad) from FILE... (- is stdin).

    Files are NDJSON or JSON. A malformed line or an invalid request is reported with its file and
    line and not published; the rest still goes. Exits non-zero when anything was not published.
    """
    check_files(list(files))
    outputs = resolve_stack(stack_name, client("cloudformation"))
    publish_documents(read_inputs(list(files)), outputs, sns_client(), as_json=as_json)
