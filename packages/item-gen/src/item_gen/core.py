"""The ItemGen stage core: a request in, one STAC document out, ready to publish."""

from __future__ import annotations

from collections.abc import Callable

from item_gen.errors import PackageFailed
from item_gen.models import CollectionRequest, Request
from item_gen.runner import run_once
from item_gen.settings import GenSettings

Runner = Callable[[Request, GenSettings], dict]


def generate(request: Request, settings: GenSettings, runner: Runner = run_once) -> dict:
    """Run the package for ``request`` and apply its collection override."""
    doc = runner(request, settings)
    if isinstance(request, CollectionRequest):
        if doc.get("type") != "Collection":
            raise PackageFailed(
                f"request {request.label}: create-collection did not write a Collection"
            )
        if request.collection_id:
            doc["id"] = request.collection_id
        return doc
    if doc.get("type") != "Feature":
        raise PackageFailed(f"request {request.label}: create-item did not write a STAC Item")
    if request.collection_id:
        doc["collection"] = request.collection_id
        for link in doc.get("links", []):
            if link.get("rel") == "collection":
                link["href"] = request.collection_id
    if not doc.get("collection"):
        raise PackageFailed(
            f"request {request.label}: item {doc.get('id')} has no collection; "
            "set collection_id in the request"
        )
    return doc
