"""The ingest API: what a person or a program posts, validated as the stages validate it."""
