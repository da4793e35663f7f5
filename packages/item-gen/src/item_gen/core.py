"""The ItemGen stage core: a request in, one STAC document out, ready to publish."""

from __future__ import annotations

from collections.abc import Callable

from item_gen.errors import PackageFailed
from item_gen.models import CollectionRequest, Request
from item_gen.runner import run_once
from item_gen.settings import GenSettings

Runner = Callable[[Request, GenSettings], dict]

_NAVIGATION = {"self", "root", "parent"}


def drop_local_navigation(doc: dict) -> None:
    """Remove self/root/parent links that point into the temporary output directory.

    stactools writes them relative to where it saved the file; once the document leaves this
    machine they point nowhere, and pgstac or a STAC API supplies its own.
    """
    links = doc.get("links")
    if isinstance(links, list):
        doc["links"] = [
            link
            for link in links
            if not (
                isinstance(link, dict)
                and link.get("rel") in _NAVIGATION
                and "://" not in str(link.get("href", ""))
            )
        ]


def generate(request: Request, settings: GenSettings, runner: Runner = run_once) -> dict:
    """Run the package for ``request`` and apply its collection override."""
    doc = runner(request, settings)
    drop_local_navigation(doc)
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
