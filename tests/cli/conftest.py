"""Fixtures of the CLI tests: the emulated ingestion stack."""

from moto_stack import deployed

__all__ = ["deployed"]
