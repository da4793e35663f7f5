"""The error hierarchy both stages use to choose between "fail this record" and "retry"."""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error stactools-ingest raises on purpose."""

    exit_code = 1


class PermanentError(IngestError):
    """Bad input: retrying the same message will fail the same way, so fail the record alone."""

    exit_code = 2


class TransientError(IngestError):
    """Trouble outside the message (database down, throttling): retry, never drop."""

    exit_code = 3


class MessageFormatError(PermanentError):
    """The record body is not JSON, or not any message shape we accept."""
