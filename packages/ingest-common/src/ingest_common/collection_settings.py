"""How a collection message asks for a pgstac setting: shared by the stage that writes the key
(ItemGen, from a collection request) and the one that applies and removes it (ItemLoad)."""

from __future__ import annotations

PARTITION_TRUNC_KEY = "stactools_ingest:partition_trunc"
"""A Collection document's key asking pgstac to partition its items by year or month.

It is not STAC: ItemLoad sets pgstac's ``collections.partition_trunc`` from it (null: one
partition; pgstac's trigger repartitions the items already there) and stores the collection
without it. A collection loaded again without the key keeps its partitioning.
"""

PARTITION_TRUNCS = ("year", "month")
"""The values pgstac's ``collections.partition_trunc`` accepts (null: one partition)."""
