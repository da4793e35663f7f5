"""``crawl``: load a static STAC catalog (local, http(s) or s3) into pgstac, here or on a stack."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from item_load.fetch import HrefFetcher, HrefPolicy, non_public_kind
from item_load.settings import LoadSettings
from stactools_ingest.commands.backfill import checkpoint_options, run_here, target_options
from stactools_ingest.crawl import Crawler, Walk, is_local, root_href
from stactools_ingest.inputs import InputProblem

READERS = 8
"""Documents read at once by default: enough to hide an http server's latency."""


def crawl_fetcher(root: str) -> HrefFetcher:
    """``run``'s reading policy plus plain http: the catalog is one the user named.

    Hosts on loopback, link-local or private addresses may be read only when the root is on
    one (or local): a public catalog cannot make the crawl read this machine's or the LAN's
    services and load what they answer.
    """
    policy = HrefPolicy.for_local_run(LoadSettings())
    return HrefFetcher(
        dataclasses.replace(
            policy,
            schemes=policy.schemes | {"http"},
            allow_private_hosts=_on_this_network(root),
        )
    )


def _on_this_network(root: str) -> bool:
    """Whether the catalog's root is local, or served from a non-public address."""
    if is_local(root):
        return True
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    try:
        addresses = socket.getaddrinfo(parts.hostname, None)
    except (OSError, UnicodeError):
        return False  # the fetcher says why it cannot reach it
    return any(
        non_public_kind(ipaddress.ip_address(info[4][0].split("%", 1)[0])) for info in addresses
    )


@click.command("crawl")
@click.argument("source")
@target_options
@click.option(
    "--readers",
    type=click.IntRange(1, 64),
    default=READERS,
    show_default=True,
    help="Item documents read at once.",
)
@click.option(
    "--load-catalogs",
    is_flag=True,
    help="Also store the Catalog documents (pgstac keeps them beside collections, for "
    "stac-fastapi-pgstac's multi-tenant catalogs); by default they are only walked.",
)
@checkpoint_options("catalog")
@click.option("--dry-run", is_flag=True, help="Walk and count; load or publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def crawl(
    source: str,
    stack_name: str | None,
    dsn: str | None,
    readers: int,
    load_catalogs: bool,
    checkpoint_path: Path | None,
    no_checkpoint: bool,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Load the static STAC catalog at SOURCE: its collections, then their items.

    SOURCE is the root catalog.json or collection.json: a local path (or its directory),
    http(s):// or s3://. Child and item links are followed (relative ones against the document
    that holds them); relative asset hrefs become absolute; the static tree's own links (self,
    root, parent, child, item, collection) are dropped, as a STAC API supplies its own. A
    broken link is reported with the document that holds it, and the crawl goes on.

    Without --stack the documents load here through `run`'s pipeline: a rerun reads the
    catalog again and loads only what is not loaded yet. With --stack they are published to
    the load topic, with a checkpoint so a rerun continues where a killed crawl stopped.
    """
    root = root_href(source)
    crawler = Crawler(crawl_fetcher(root), workers=readers, load_catalogs=load_catalogs)
    walk = crawler.open(root)  # reads the root: a bad one fails here, before anything starts
    if dry_run:
        _dry_run(crawler, walk, as_json)
        return
    if not stack_name:
        run_here(
            walk.records(),
            dsn,
            gen_workers=0,
            checkpoint_path=checkpoint_path,
            no_checkpoint=no_checkpoint,
            as_json=as_json,
            quiet=quiet,
        )
    from stactools_ingest.aws_publish import sns_client
    from stactools_ingest.aws_stack import client, resolve_stack
    from stactools_ingest.checkpoint import Checkpoint, default_path
    from stactools_ingest.commands.submit import publish_documents, publish_resumably

    outputs = resolve_stack(stack_name, client("cloudformation"))
    if no_checkpoint:
        publish_documents(walk.records(), outputs, sns_client(), as_json=as_json)
        return
    identity = {"crawl": root, "load_catalogs": load_catalogs}
    publish_resumably(
        lambda done: walk.rows(skip=done),
        Checkpoint(checkpoint_path or default_path("crawl", stack_name, identity), identity),
        outputs,
        sns_client(),
        as_json=as_json,
    )


def _dry_run(crawler: Crawler, walk: Walk, as_json: bool) -> None:
    import json

    for record in walk.records():
        if isinstance(record, InputProblem):
            click.echo(f"{record.source}: {record.reason}", err=True)
    counts = dataclasses.asdict(crawler.counts)
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(
            f"{counts['collections']} collections, {counts['items']} items under "
            f"{counts['catalogs']} catalogs; {counts['problems']} broken links or documents; "
            "nothing was loaded",
            file=sys.stdout,
        )
    if counts["problems"]:
        sys.exit(1)
