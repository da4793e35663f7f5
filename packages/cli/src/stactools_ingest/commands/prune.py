"""``stactools-ingest prune``: delete the items whose assets an inventory no longer lists."""

from __future__ import annotations

import json

import click

from stactools_ingest.prune import PruneRefused, apply_prune, plan_prune, read_inventory
from stactools_ingest.target import connect, resolve_dsn


@click.command("prune")
@click.option("--collection", required=True, help="The collection to prune.")
@click.option(
    "--keep",
    "inventory",
    required=True,
    metavar="INVENTORY",
    help="File of the hrefs that exist now, one per line ('#' comments).",
)
@click.option(
    "--dry-run/--apply",
    "dry_run",
    default=True,
    help="Only print what would be deleted (the default), or delete it.",
)
@click.option("--allow-all", is_flag=True, help="Let --apply delete every item of the collection.")
@click.option("--dsn", help="Target pgstac (default: PGSTAC_DSN, PG* variables, else embedded).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def prune(
    collection: str, inventory: str, dry_run: bool, allow_all: bool, dsn: str | None, as_json: bool
) -> None:
    """Delete the items of a collection none of whose asset hrefs INVENTORY lists.

    Prints the ids first (one per line; the summary goes to stderr). Items without asset hrefs
    are kept. Deletes go through the load stage's Delete path: one transaction per partition,
    partition stats refreshed, and an item a newer message loads meanwhile is kept.
    """
    keep = read_inventory(inventory)
    with connect(resolve_dsn(dsn, start_embedded=False)) as conn:
        plan = plan_prune(conn, collection, keep)
        if not as_json:
            for item_id in plan.to_delete:
                click.echo(item_id)
        everything = plan.items > 0 and len(plan.to_delete) == plan.items
        if not dry_run and everything and not allow_all:
            raise PruneRefused(
                f"the inventory would delete every item of collection {collection!r} "
                f"({plan.items}); check it, or pass --allow-all to mean it"
            )
        deleted = 0
        if not dry_run and plan.to_delete:
            deleted = apply_prune(
                conn,
                plan,
                lambda done, total: click.echo(f"deleted {done:,} / {total:,}", err=True),
            )
    kept = f"{plan.without_assets} without asset hrefs kept"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "collection": collection,
                    "items": plan.items,
                    "to_delete": len(plan.to_delete),
                    "without_assets": plan.without_assets,
                    "deleted": deleted,
                    "applied": not dry_run,
                }
            )
        )
    elif dry_run:
        click.echo(
            f"would delete {len(plan.to_delete)} of {plan.items} items of collection "
            f"{collection!r} ({kept}); run again with --apply to delete them",
            err=True,
        )
    else:
        click.echo(
            f"deleted {deleted} of {plan.items} items of collection {collection!r} ({kept})",
            err=True,
        )
