"""``stactools-ingest run``: the whole pipeline on this machine, resumable after a kill."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import NoReturn

import click

from item_gen.settings import GenSettings
from stactools_ingest.inputs import InputProblem, InputRecord, check_files, read_inputs
from stactools_ingest.pipeline import Enqueued, LocalPipeline, RunSummary
from stactools_ingest.progress import Reporter
from stactools_ingest.target import resolve_dsn

RUN_WORKERS = max(2, os.cpu_count() or 2)
"""ItemGen workers by default: one warm stactools process per core."""


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    click.echo(
        f"{summary.requests} requests, {summary.documents} documents: "
        f"{summary.succeeded} succeeded, {summary.failed} failed "
        f"({summary.dead_letters} dead-lettered, {summary.input_errors} unusable input lines); "
        f"{summary.items_loaded} items and {summary.collections_loaded} collections loaded"
        + (f", {summary.items_deleted} items deleted" if summary.items_deleted else "")
        + f" in {summary.seconds:.1f} s"
    )
    if summary.dead_letters:
        click.echo(
            "see why: stactools-ingest status --state dead_lettered (or dlq list); "
            "every request's outcome: stactools-ingest status --since 1h",
            err=True,
        )


@click.command("run")
@click.argument("files", nargs=-1)
@click.option("--dsn", help="Target pgstac (default: PGSTAC_DSN, PG* variables, else embedded).")
@click.option(
    "--workers",
    type=int,
    default=RUN_WORKERS,
    show_default=True,
    help="ItemGen workers running stactools packages in parallel (one warm process each).",
)
@click.option(
    "--batch-size",
    type=int,
    default=1000,
    show_default=True,
    help="Most documents per ItemLoad batch.",
)
@click.option(
    "--max-receives",
    type=int,
    default=5,
    show_default=True,
    help="Attempts before a message goes to the dead-letter store.",
)
@click.option(
    "--visibility-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds a message stays leased before another worker may take it.",
)
@click.option(
    "--request-timeout",
    type=float,
    default=None,
    help="Seconds one stactools command may run (default: REQUEST_TIMEOUT_SECONDS or 300).",
)
@click.option(
    "--create-collections",
    is_flag=True,
    help="Create placeholder collections for items of unknown collections.",
)
@click.option(
    "--events",
    type=click.Path(dir_okay=False, writable=True),
    help="Append one JSON line per item created or changed, once committed (the post-ingest "
    'notification: {"action": "created"|"updated", "collection", "id", "request_id", '
    '"datetime"}).',
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run(
    files: tuple[str, ...],
    dsn: str | None,
    workers: int,
    batch_size: int,
    max_receives: int,
    visibility_timeout: float,
    request_timeout: float | None,
    create_collections: bool,
    events: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Ingest FILE... (JSON or NDJSON of requests and STAC documents; - for stdin).

    Without FILE, processes what is already queued (after `dlq redrive`, or a killed run).
    Running the same command again after an interruption finishes the work; running it over a
    finished file changes nothing. Exits 0 only when nothing failed or was dead-lettered.
    """
    check_files(list(files))
    gen_settings = GenSettings()
    if request_timeout is not None:
        gen_settings.request_timeout_seconds = request_timeout
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(events, "ab")) if events else None
        pipeline = LocalPipeline(
            resolve_dsn(dsn),
            gen_workers=workers,
            batch_size=batch_size,
            visibility_timeout=visibility_timeout,
            max_receives=max_receives,
            gen_settings=gen_settings,
            create_collections_if_missing=create_collections,
            events=sink,
        )
        # Files are read whole, so reading ahead never blocks; stdin could.
        read_ahead = "-" not in files
        run_locally(
            pipeline,
            read_inputs(list(files)),
            as_json=as_json,
            quiet=quiet,
            read_ahead=read_ahead,
        )


def run_locally(
    pipeline: LocalPipeline,
    records: Iterable[InputRecord | InputProblem] | None,
    *,
    as_json: bool = False,
    quiet: bool = False,
    read_ahead: bool = False,
) -> NoReturn:
    """``pipeline`` over ``records`` (``run``'s, or ``inventory``'s without a stack), with
    progress and summary; exits 0 only when nothing failed."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    enqueued = Enqueued()
    reporter = Reporter(enqueued, sys.stderr, quiet=quiet or as_json)
    try:
        summary = pipeline.run(
            enqueued,
            on_tick=reporter.tick,
            records=records,
            on_problem=lambda p: click.echo(f"{p.source}: {p.reason}", err=True),
            read_ahead=read_ahead,
        )
    finally:
        reporter.close()
    _print_summary(summary, as_json)
    sys.exit(0 if summary.failed == 0 else 1)
