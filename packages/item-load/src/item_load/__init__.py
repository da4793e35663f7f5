"""Stage 2 of stactools-ingest: STAC documents into pgstac, one bad message failing alone."""
