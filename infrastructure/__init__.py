"""The stactools-ingest CDK app: network, pgstac database, the two ingestion stages."""
