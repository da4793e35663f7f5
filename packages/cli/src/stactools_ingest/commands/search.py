"""``stactools-ingest search``: see what landed, through pgstac's own ``search`` function."""

from __future__ import annotations

import json
import math

import click
import psycopg

from ingest_common.errors import IngestError
from stactools_ingest.target import connect, resolve_dsn


class SearchRefused(IngestError):
    """pgstac rejected the search's values (SQLSTATE class 22): the user's input, exit 2."""

    exit_code = 2


@click.command("search")
@click.option("--collection", "collections", multiple=True, help="Collection id (repeatable).")
@click.option("--bbox", help="minx,miny,maxx,maxy in WGS84.")
@click.option("--datetime", "dt", help="RFC 3339 instant or interval (a/b, open ends with ..).")
@click.option("--id", "ids", multiple=True, help="Item id (repeatable).")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--dsn", help="Target pgstac (default: PGSTAC_DSN, PG* variables, else embedded).")
@click.option("--json", "as_json", is_flag=True, help="Print the items as NDJSON.")
def search(
    collections: tuple[str, ...],
    bbox: str | None,
    dt: str | None,
    ids: tuple[str, ...],
    limit: int,
    dsn: str | None,
    as_json: bool,
) -> None:
    """Search items the way a STAC API would, without writing SQL."""
    query: dict = {"limit": limit}
    if collections:
        query["collections"] = list(collections)
    if ids:
        query["ids"] = list(ids)
    if bbox:
        try:
            query["bbox"] = [float(v) for v in bbox.split(",")]
        except ValueError:
            query["bbox"] = []
        if len(query["bbox"]) != 4 or not all(map(math.isfinite, query["bbox"])):
            raise click.BadParameter(
                "expected four finite numbers: minx,miny,maxx,maxy", param_hint="'--bbox'"
            )
    if dt:
        query["datetime"] = dt
    with connect(resolve_dsn(dsn, start_embedded=False)) as conn:
        try:
            result = conn.execute("SELECT search(%s::jsonb)", (json.dumps(query),)).fetchone()[0]
        except psycopg.Error as e:
            if not (e.sqlstate or "").startswith("22"):  # class 22: the values given, not the db
                raise
            reason = (e.diag.message_primary or str(e)).strip().splitlines()[0]
            raise SearchRefused(f"pgstac refused the search: {reason}") from None
    features = result.get("features", [])
    if as_json:
        for feature in features:
            click.echo(json.dumps(feature))
        return
    for f in features:
        props = f.get("properties", {})
        when = props.get("datetime") or f"{props.get('start_datetime')}/{props.get('end_datetime')}"
        click.echo(f"{f.get('collection')}\t{f.get('id')}\t{when}\t{f.get('bbox')}")
    matched = result.get("numberMatched", result.get("context", {}).get("matched"))
    click.echo(
        f"{len(features)} items shown" + (f" of {matched} matched" if matched else ""), err=True
    )
