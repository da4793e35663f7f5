"""One module per noun of the ``stactools-ingest`` command group."""
