"""``submit``: publish requests and STAC documents from JSON/NDJSON files to a deployed pipeline."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from ingest_common.errors import IngestError, PermanentError
from stactools_ingest.aws_ops import (
    STACK_HELP,
    BatchPublisher,
    PublishSummary,
    client,
    output,
    resolve_stack,
    route,
)

PROGRESS_EVERY_SECONDS = 5.0


class InputNotFound(PermanentError):
    """An input file named on the command line does not exist."""


class NotAllPublished(IngestError):
    """Some inputs were not published; each was reported with its file and line above."""


@dataclass(frozen=True)
class Malformed:
    """An input line that is not JSON; it is reported and skipped, the rest still goes."""

    reason: str


def check_inputs(paths: Iterable[str]) -> None:
    """Fail before publishing anything when an input file is missing."""
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise InputNotFound(f"{path}: no such file")


def open_input(path: str) -> contextlib.AbstractContextManager[TextIO]:
    if path == "-":
        return contextlib.nullcontext(click.get_text_stream("stdin"))  # never close stdin
    return open(path, encoding="utf-8")


def _expand(source: str, doc: Any) -> Iterator[tuple[str, Any]]:
    """A JSON array is a list of inputs, each named by its index."""
    if isinstance(doc, list):
        for i, element in enumerate(doc):
            yield f"{source}[{i}]", element
    else:
        yield source, doc


def _ndjson(name: str, lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        source = f"{name}:{lineno}"
        try:
            doc = json.loads(line)
        except ValueError as e:
            yield source, Malformed(f"malformed JSON: {e}")
            continue
        yield from _expand(source, doc)


def read_documents(name: str, stream: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(file:line, document)`` for an NDJSON or JSON stream; malformed lines become ``Malformed``.

    Streams NDJSON line by line. Only when the first non-blank line is not JSON on its own (a
    pretty-printed document) is the whole input read and parsed as one JSON value.
    """
    lines = iter(stream)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    if not head or not head[-1].strip():
        return
    try:
        json.loads(head[-1])
    except ValueError:
        text = "".join(head) + "".join(lines)
        try:
            doc = json.loads(text)
        except ValueError:
            yield from _ndjson(name, text.splitlines())
            return
        yield from _expand(f"{name}:{len(head)}", doc)
        return
    yield from _ndjson(name, itertools.chain(head, lines))


def documents_from(paths: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Every document of every input, in order, each file opened only while it is read."""
    for path in paths:
        with open_input(path) as stream:
            yield from read_documents("<stdin>" if path == "-" else path, stream)


class _Display:
    """Progress and per-input errors: a rich bar on a terminal, plain log lines otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._progress: Any = None
        self._last = time.monotonic()

    def __enter__(self) -> _Display:
        if self.tty:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("published {task.fields[published]}  failed {task.fields[failed]}"),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task("publish", published=0, failed=0, rate=0.0)
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
        if self._progress is not None:
            self._progress.update(
                self._task, published=summary.published, failed=summary.failed, rate=summary.rate
            )
        elif time.monotonic() - self._last >= PROGRESS_EVERY_SECONDS:
            self._last = time.monotonic()
            click.echo(
                f"published {summary.published}, failed {summary.failed} ({summary.rate:.0f}/s)",
                err=True,
            )


def publish_documents(
    documents: Iterable[tuple[str, Any]],
    outputs: dict[str, str],
    sns: Any,
    *,
    as_json: bool = False,
) -> PublishSummary:
    """Route each document to its topic, publish in batches, print the summary, fail if any failed.

    Shared by ``submit`` and ``inventory``: requests go to the ItemGen topic, STAC documents to the
    ItemLoad topic; an input that is malformed or invalid is reported by source and skipped.
    """
    topics = {
        "gen": output(outputs, "ItemGenSNSTopicArn"),
        "load": output(outputs, "ItemLoadTopicArn"),
    }
    with _Display() as display:
        publisher = BatchPublisher(sns, on_error=display.error, on_progress=display.progress)
        for source, doc in documents:
            if isinstance(doc, Malformed):
                publisher.fail(source, doc.reason)
                continue
            try:
                routed = route(doc)
            except PermanentError as e:
                publisher.fail(source, str(e))
                continue
            for stage, message in routed:
                publisher.add(topics[stage], message, source)
        summary = publisher.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        click.echo(
            f"published {summary.published}, failed {summary.failed} "
            f"in {summary.seconds:.1f} s ({summary.rate:.1f}/s)"
        )
    if summary.failed:
        raise NotAllPublished(
            f"{summary.failed} input(s) not published (each reported above with its file and line)"
        )
    return summary


@click.command("submit")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--stack", "stack_name", required=True, metavar="NAME", help=STACK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def submit(files: tuple[str, ...], stack_name: str, as_json: bool) -> None:
    """Publish requests (to ItemGen) and STAC documents (to ItemLoad) from FILE... (- is stdin).

    Files are NDJSON or JSON. A malformed line or an invalid request is reported with its file and
    line and not published; the rest still goes. Exits non-zero when anything was not published.
    """
    check_inputs(files)
    outputs = resolve_stack(stack_name, client("cloudformation"))
    publish_documents(documents_from(files), outputs, client("sns"), as_json=as_json)


COMMANDS = [submit]
