"""``status --stack``: queue depths, in-flight counts and dead letters of a deployed pipeline."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from stactools_ingest.aws_stack import client, queue_status, resolve_stack

STAGE_NAMES = {"gen": "ItemGen", "load": "ItemLoad"}


def queue_depths(stack_name: str, as_json: bool) -> None:
    """Messages queued, in flight and dead-lettered per stage (SQS's approximate counts)."""
    outputs = resolve_stack(stack_name, client("cloudformation"))
    counts = queue_status(outputs, client("sqs"))
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = Table(title=f"{stack_name} queues")
    for column in ("stage", "queued", "in flight", "dead letters"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, c in counts.items():
        table.add_row(
            STAGE_NAMES[stage], str(c["queued"]), str(c["in_flight"]), str(c["dead_letters"])
        )
    Console().print(table)
