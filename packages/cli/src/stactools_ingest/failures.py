"""Verdicts on the local workers' messages, with the AWS stages' classification.

A message that failed is dead-lettered at once when retrying can never help
(``item_load.db.is_permanent``: bad input, a row PostgreSQL refused for its data) and retried
otherwise, exactly as the Lambdas decide. Only what names the message is added here.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ingest_common.errors import PermanentError, TransientError
from item_load.core import Failure
from item_load.db import is_permanent
from item_load.messages import COLLECTION_TYPES

__all__ = ["Failure", "describe", "failure_of", "label"]


def describe(error: BaseException) -> str:
    """The error's own words, with its kind when those do not say it."""
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        detail = error.diag.message_detail
        return error.diag.message_primary + (f" ({detail})" if detail else "")
    text = " ".join(str(error).split())
    if isinstance(error, PermanentError | TransientError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_of(error: BaseException, what: str) -> Failure:
    """The verdict on a message whose processing raised ``error``; ``what`` names the record."""
    return Failure(f"{what}: {describe(error)}", is_permanent(error))


def label(body: Any) -> str:
    """How a message is named in a reason: its href, or its first documents' ids."""
    if isinstance(body, dict):
        if "href" in body and "type" not in body:
            return f"href {str(body['href'])[:300]!r}"
        kind = body.get("type")
        if kind == "Feature":
            return f"item {str(body.get('id'))[:200]!r} of collection {body.get('collection')!r}"
        if kind in COLLECTION_TYPES:
            return f"{kind.lower()} {str(body.get('id'))[:200]!r}"
        if kind == "FeatureCollection" and isinstance(body.get("features"), list):
            ids = [str(f.get("id")) for f in body["features"][:3] if isinstance(f, dict)]
            more = ", …" if len(body["features"]) > 3 else ""
            return f"feature collection of {len(body['features'])} ({', '.join(ids)}{more})"
    return "message"
