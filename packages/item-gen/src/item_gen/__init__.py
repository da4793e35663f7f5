"""Stage 1 of stactools-ingest: run a stactools package on a request, publish what it makes."""
