"""``stactools-ingest status``: what happened to a request, or to all of them, from the ledger.

The ledger (``item_load.ledger``) lives in the target pgstac database: the embedded one, ``--dsn``
or the PG* variables. ``--stack NAME`` alone shows a deployment's queue depths.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ingest_api.ages import parse_since
from ingest_common.errors import IngestError
from ingest_common.ledger import STATES
from item_load import ledger
from stactools_ingest.aws_stack import STACK_HELP
from stactools_ingest.target import connect, resolve_dsn


class UnknownRequest(IngestError):
    """The ledger has no such request (never seen, or expired): exit 1."""

    exit_code = 1


def since_option(value: str) -> datetime:
    """``--since``'s value as an instant, or a usage error saying what is expected."""
    try:
        return parse_since(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--since'") from None


def _items_text(row: dict[str, Any]) -> str:
    items = row["items"]
    shown = ", ".join(f"{i['collection']}/{i['id']}" for i in items[:5])
    return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _print_one(row: dict[str, Any]) -> None:
    lines = [
        ("request", row["request_id"]),
        ("state", f"{row['state']} ({row['stage']}, {row['attempts']} attempts)"),
        ("collection", row["collection"] or "-"),
        ("items", _items_text(row) or "-"),
    ]
    if row["generated"] is not None:
        lines.append(("generated", str(row["generated"])))
    if row["error"]:
        lines.append(("error", row["error"]))
    lines.append(("updated", row["updated_at"]))
    for name, value in lines:
        click.echo(f"{name:<11}{value}")


def _print_many(counts: dict[str, int], rows: list[dict[str, Any]], limit: int) -> None:
    click.echo("  ".join(f"{state} {n}" for state, n in counts.items()))
    if not rows:
        return
    table = Table(box=None, pad_edge=False)
    for column in ("updated", "state", "request", "collection", "items / error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["updated_at"][:19],
            row["state"],
            row["request_id"],
            row["collection"] or "",
            row["error"] if row["error"] else _items_text(row),
        )
    Console(soft_wrap=False).print(table)
    if len(rows) == limit:
        click.echo(f"(the newest {limit}; --limit shows more)", err=True)


def _status_of_deployment(
    stack_name: str,
    request_id: str | None,
    state: str | None,
    since: str | None,
    collection: str | None,
    submission_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The same answers from a deployment, through its ingest API (SigV4)."""
    from stactools_ingest import aws_ingest_api
    from stactools_ingest.aws_stack import client, resolve_stack

    outputs = resolve_stack(stack_name, client("cloudformation"))
    url = outputs.get("IngestApiUrl")
    if not url:
        raise UnknownRequest(
            f"stack {stack_name} has no ingest API (ingest_api.enabled: false, or deployed "
            "before it existed); deploy it, or point --dsn at the deployment's database"
        )
    if request_id is not None:
        row = aws_ingest_api.request_status(url, request_id)
        if row is None:
            raise UnknownRequest(f"no request {request_id!r} in the ledger of {stack_name}")
        if as_json:
            click.echo(json.dumps(row))
        else:
            _print_one(row)
        return
    if since is not None:
        since_option(since)  # refused here, in the same words, before asking
    filters = {"since": since, "collection": collection, "submission": submission_id}
    counts = aws_ingest_api.counts(url, filters)
    page = aws_ingest_api.list_requests(url, {**filters, "state": state}, limit)
    rows = page["requests"]
    if counts is None:
        click.echo(
            f"(stack {stack_name}'s ingest API cannot count: the counts are of the rows shown; "
            "cdk deploy brings it up to date)",
            err=True,
        )
        counts = {s: sum(1 for r in rows if r["state"] == s) for s in STATES}
    if as_json:
        click.echo(
            json.dumps({"counts": counts, "requests": rows, "next_token": page.get("next_token")})
        )
        return
    _print_many(counts, rows, limit)


@click.command("status")
@click.argument("request_id", required=False)
@click.option("--state", type=click.Choice(STATES), help="Only requests in this state.")
@click.option(
    "--since",
    metavar="AGE",
    help="Only requests updated within AGE (15m, 1h, 2d) or since a date-time.",
)
@click.option("--collection", help="Only requests of this collection.")
@click.option("--submission", "submission_id", metavar="ID", help="Only this submission's.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--dsn", help="Target pgstac (default: PGSTAC_DSN, PG* variables, else embedded).")
@click.option(
    "--stack",
    "stack_name",
    metavar="NAME",
    help="Ask a deployment: alone, its queue depths; with a request or filters, its ledger "
    f"through its ingest API (SigV4, your AWS credentials). {STACK_HELP}",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(
    request_id: str | None,
    state: str | None,
    since: str | None,
    collection: str | None,
    submission_id: str | None,
    limit: int,
    dsn: str | None,
    stack_name: str | None,
    as_json: bool,
) -> None:
    """What happened to REQUEST_ID; without it, counts per state and the newest requests.

    A request is known by the request_id it was sent with, else by the id of the message it
    came in (locally: the queue's id for it, shown by `status --since 1h`). States: queued,
    generated, loaded, failed (retrying), dead_lettered, superseded (a newer message for the
    same item won). The ledger keeps 30 days.
    """
    if stack_name:
        if not (request_id or state or since or collection or submission_id):
            from stactools_ingest.commands.aws_status import queue_depths

            queue_depths(stack_name, as_json)
            return
        _status_of_deployment(
            stack_name, request_id, state, since, collection, submission_id, limit, as_json
        )
        return
    since_at = since_option(since) if since else None
    with connect(resolve_dsn(dsn, start_embedded=False)) as conn:
        has_ledger = ledger.exists(conn)
        if request_id is not None:
            row = ledger.get(conn, request_id) if has_ledger else None
            if row is None:
                raise UnknownRequest(
                    f"no request {request_id!r} in the ledger (never received, or older than "
                    "its retention); list recent ones with: stactools-ingest status --since 1d"
                )
            if as_json:
                click.echo(json.dumps(row))
            else:
                _print_one(row)
            return
        filters = {"since": since_at, "collection": collection, "submission_id": submission_id}
        if has_ledger:
            counts = ledger.counts(conn, **filters)
            rows = ledger.find(conn, state=state, limit=limit, **filters)
        else:
            counts, rows = dict.fromkeys(STATES, 0), []
    if as_json:
        click.echo(json.dumps({"counts": counts, "requests": rows}))
    else:
        _print_many(counts, rows, limit)
