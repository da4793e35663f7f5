"""What both stactools-ingest stages share: record unwrapping and the error hierarchy."""
