"""ItemLoad's errors: what fails one message, and what makes the whole batch retry."""

from __future__ import annotations

from typing import Any

from ingest_common.errors import PermanentError, TransientError


def label(value: Any, width: int = 80) -> str:
    """An id for a reason text: repr'd (control characters show) and cut to ``width``."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


class InvalidMessage(PermanentError):
    """The message is JSON but not something the load topic accepts."""


class InvalidItem(PermanentError):
    """An item pgstac would refuse or store wrongly, found before any database round trip."""


class InvalidCollection(PermanentError):
    """A collection without what STAC requires (id, description, license, extent, links)."""


class FetchError(PermanentError):
    """An href pointer or S3 notification names an object we could not read."""


class DatabaseUnavailable(TransientError):
    """pgstac could not be reached or the connection broke; the batch is retried by SQS."""


class HrefRefused(FetchError):
    """The href policy forbids reading this href (scheme, host, size, time, file type)."""


class FetchUnavailable(TransientError):
    """Reading an href failed for a reason outside the message (S3 throttling, a 5xx, a reset)."""
