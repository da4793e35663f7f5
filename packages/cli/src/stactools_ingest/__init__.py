"""The stactools-ingest command: the pipeline on one machine, and tools to operate it on AWS."""
