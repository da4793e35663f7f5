"""Prune a collection: delete the items whose assets an inventory no longer lists.

stac-repository's prune, for pgstac: the inventory (one href per line) is what exists now; an
item none of whose asset hrefs is listed is gone at the source, and is deleted through the
load stage's own Delete path (``CollectionWriter.delete``: one transaction per partition,
newest message wins, partition stats refreshed). An item with no asset hrefs at all cannot be
judged by an inventory and is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psycopg

from ingest_common.errors import IngestError
from item_load.core import BatchLoader
from item_load.messages import MAX_DELETE_IDS
from stactools_ingest.inputs import check_files


class PruneRefused(IngestError):
    """The prune was not started: its inputs would make it delete what was not meant."""

    exit_code = 2


@dataclass
class PrunePlan:
    """What a prune of one collection deletes: ``to_delete`` ids, out of ``items``."""

    collection: str
    items: int = 0
    without_assets: int = 0
    to_delete: list[str] = field(default_factory=list)


def read_inventory(path: str) -> set[str]:
    """The hrefs an inventory lists: one per line, blank lines and ``#`` comments skipped.

    An inventory listing nothing is refused: it would delete every item of the collection.
    """
    check_files([path])
    with open(path, encoding="utf-8") as stream:
        hrefs = {line.strip() for line in stream}
    hrefs = {h for h in hrefs if h and not h.startswith("#")}
    if not hrefs:
        raise PruneRefused(f"{path} lists no hrefs; a prune with it would delete every item")
    return hrefs


def plan_prune(conn: psycopg.Connection, collection: str, keep: set[str]) -> PrunePlan:
    """Read the collection's items' asset hrefs (a server-side cursor: any number of items)."""
    if conn.execute("SELECT 1 FROM collections WHERE id = %s", (collection,)).fetchone() is None:
        raise PruneRefused(f"no collection {collection!r} in pgstac; nothing to prune")
    plan = PrunePlan(collection)
    with conn.transaction(), conn.cursor(name="stactools_ingest_prune") as cur:
        cur.itersize = 10_000
        cur.execute(
            """
            SELECT id, ARRAY(SELECT jsonb_path_query(content, '$.assets.*.href') #>> '{}')
            FROM items WHERE collection = %s ORDER BY id
            """,
            (collection,),
        )
        for item_id, hrefs in cur:
            plan.items += 1
            if not hrefs:
                plan.without_assets += 1
            elif keep.isdisjoint(hrefs):
                plan.to_delete.append(item_id)
    return plan


def apply_prune(
    conn: psycopg.Connection,
    plan: PrunePlan,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Delete the plan's ids, in chunks of a Delete message's size; the number deleted.

    Sent now: an item a newer message loads while the prune runs is kept.
    """
    writer = BatchLoader(conn).writer
    deleted, touched = 0, set[str]()
    for chunk in _chunks(plan.to_delete, MAX_DELETE_IDS):
        ids, partitions = writer.delete(plan.collection, chunk, None)
        deleted += len(ids)
        touched |= partitions
        if on_progress:
            on_progress(deleted, len(plan.to_delete))
    writer.refresh_now(plan.collection, touched)
    return deleted


def _chunks(ids: list[str], size: int) -> Iterable[list[str]]:
    return (ids[i : i + size] for i in range(0, len(ids), size))
