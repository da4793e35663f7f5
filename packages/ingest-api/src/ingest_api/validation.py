"""Which stage an input goes to, and whether that stage would take it: one definition for the
ingest API (on AWS and in ``serve``), ``run``, ``submit`` and the backfills.

Requests are validated as ItemGen validates them (``item_gen.models``); everything else goes to
the load stage exactly when ItemLoad's own parser (``item_load.messages.parse_message``) accepts
it. Nothing is read here: an href is checked when it is loaded.
"""

from __future__ import annotations

from typing import Any

from ingest_common.errors import PermanentError
from ingest_common.ledger import is_status_report
from item_gen.models import CollectionRequest, is_request, parse_request
from item_load.messages import is_collection, parse_message
from item_load.validation import check_collection, check_item

GEN, LOAD = "gen", "load"


class Unroutable(PermanentError):
    """Neither a request nor a message the load topic accepts."""


def classify(obj: Any) -> tuple[str, int]:
    """``("gen"|"load", priority)`` for an input; a PermanentError saying why it is unusable.

    Priority 0 is for collections and collection requests, which must land before items.
    """
    if is_request(obj):
        request = parse_request(obj)
        return (GEN, 0 if isinstance(request, CollectionRequest) else 1)
    if is_status_report(obj):
        raise Unroutable("a status report is the stages' own message, not an input")
    try:
        parse_message(obj, "", None)
    except PermanentError as e:
        raise Unroutable(f"not an item or collection request, nor a load message: {e}") from e
    return (LOAD, 0 if is_collection(obj) else 1)


def check_documents(obj: Any) -> None:
    """A PermanentError when ItemLoad would refuse an item or collection in ``obj`` (its own
    checks, no database): a caller who waits for an answer gets it now, not from the DLQ."""
    if not isinstance(obj, dict):
        return
    docs = obj.get("features") if obj.get("type") == "FeatureCollection" else [obj]
    for doc in docs if isinstance(docs, list) else []:
        if is_collection(doc):
            check_collection(doc)
        elif isinstance(doc, dict) and doc.get("type") == "Feature":
            check_item(doc)
