"""Stage 2 of stactools-ingest: STAC items and collections into pgstac, one bad message failing alone."""
