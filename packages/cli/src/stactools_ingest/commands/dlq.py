"""``stactools-ingest dlq``: dead letters of the local run, or of a deployed stack's DLQs."""

from __future__ import annotations

import json

import click

from stactools_ingest.queue import LocalQueues
from stactools_ingest.target import connect, resolve_dsn

_STACK = click.option("--stack", help="A deployed ingestion stack: use its SQS dead-letter queues.")
_DSN = click.option("--dsn", help="Target pgstac of the local run (default: embedded).")
# The stages by their queue names (gen, load) or their package names (item-gen, item-load).
STAGE_NAMES = {"gen": "gen", "load": "load", "item-gen": "gen", "item-load": "load"}


def _stage_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else STAGE_NAMES[value]


_STAGE = click.option(
    "--stage",
    type=click.Choice(list(STAGE_NAMES)),
    callback=_stage_name,
    help="Only this stage: gen (item-gen) or load (item-load).",
)


def _local(dsn: str | None) -> LocalQueues:
    return LocalQueues(connect(resolve_dsn(dsn, start_embedded=False)))


def _one_line(text: str | None, width: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group("dlq")
def dlq() -> None:
    """List, inspect and redrive dead letters."""


@dlq.command("list")
@_STACK
@_DSN
@_STAGE
@click.option("--json", "as_json", is_flag=True, help="NDJSON output.")
def list_(stack: str | None, dsn: str | None, stage: str | None, as_json: bool) -> None:
    """Dead letters with the reason they failed."""
    if stack:
        from stactools_ingest.aws_dlq import list_dead_letters
        from stactools_ingest.aws_stack import resolve_stack

        rows = list_dead_letters(resolve_stack(stack), stage)
        for row in rows:
            if as_json:
                click.echo(json.dumps(row, default=str))
            else:
                click.echo(
                    f"{row['stage']}\t{row['message_id']}\treceives={row['receive_count']}\t"
                    f"{_one_line(row['body'], 120)}"
                )
                for line in (row["reason"] or "").splitlines():  # in full: cause lines too
                    click.echo(f"\t{line}")
        click.echo(f"{len(rows)} dead letters", err=True)
        return
    letters = _local(dsn).dead_letters(stage)
    for d in letters:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "queue": d.queue,
                        "id": d.id,
                        "source": d.source,
                        "receive_count": d.receive_count,
                        "reason": d.last_error,
                        "failed_at": d.updated_at.isoformat(),
                        "body": d.body,
                    }
                )
            )
        else:
            click.echo(f"{d.queue}\t{d.id[:12]}\t{d.source}\t{_one_line(d.last_error)}")
    click.echo(f"{len(letters)} dead letters", err=True)


@dlq.command("show")
@click.argument("message_id")
@_DSN
def show(message_id: str, dsn: str | None) -> None:
    """One local dead letter in full: source, attempts, reason and body (id prefix is enough)."""
    letter = _local(dsn).dead_letter(message_id)
    if letter is None:
        raise click.ClickException(f"no single dead letter with id {message_id!r}; see: dlq list")
    click.echo(f"queue:    {letter.queue}\nid:       {letter.id}\nsource:   {letter.source}")
    click.echo(f"receives: {letter.receive_count}\nfailed:   {letter.updated_at.isoformat()}")
    click.echo(f"reason:   {letter.last_error}\nbody:\n{json.dumps(letter.body, indent=2)}")


@dlq.command("redrive")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@_STACK
@_DSN
@_STAGE
def redrive(
    message_ids: tuple[str, ...], all_: bool, stack: str | None, dsn: str | None, stage: str | None
) -> None:
    """Put dead letters back on their queue (then re-run `stactools-ingest run` locally)."""
    if stack:
        from stactools_ingest.aws_dlq import redrive_dead_letters
        from stactools_ingest.aws_stack import resolve_stack

        click.echo(f"redrove {redrive_dead_letters(resolve_stack(stack), stage)} messages")
        return
    if not all_ and not message_ids:
        raise click.UsageError("name dead-letter ids or pass --all")
    queues = _local(dsn)
    ids = None
    if not all_:
        ids = []
        for prefix in message_ids:
            letter = queues.dead_letter(prefix)
            if letter is None:
                raise click.ClickException(f"no single dead letter with id {prefix!r}")
            ids.append(letter.id)
    click.echo(
        f"redrove {queues.redrive(ids, stage)} messages; run `stactools-ingest run` to process them"
    )
