"""stactools_ingest."""
