"""The ItemGen stage core: a request in, one STAC document out, ready to publish."""

from __future__ import annotations

from collections.abc import Callable

from ingest_common.collection_settings import PARTITION_TRUNC_KEY
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


def _id_problem(doc: dict) -> str | None:
    """What is wrong with a document's id, if anything."""
    if "id" not in doc or doc["id"] is None:
        return "no id"
    if not isinstance(doc["id"], str):
        return f"an id that is not a string ({type(doc['id']).__name__})"
    if not doc["id"].strip():
        return "an empty id"
    return None


def _geometry_problem(doc: dict) -> str | None:
    """What is wrong with an item's geometry, if anything (pgstac stores no item without one)."""
    geometry = doc.get("geometry")
    if geometry is None:
        return "null geometry"
    if not isinstance(geometry, dict) or not isinstance(geometry.get("type"), str):
        return "a geometry without type and coordinates"
    if "coordinates" not in geometry and "geometries" not in geometry:
        return "a geometry without type and coordinates"
    return None


def _unusable(request: Request, kind: str, problem: str) -> PackageFailed:
    return PackageFailed(
        f"request {request.label}: `stac {request.group_name} {request.command}` wrote {kind} "
        f"with {problem}; pgstac cannot store it, so it is not published: check the package "
        "and the request's arguments"
    )


def generate(request: Request, settings: GenSettings, runner: Runner = run_once) -> dict:
    """Run the package for ``request``, refuse what pgstac cannot store, apply the override."""
    doc = runner(request, settings)
    drop_local_navigation(doc)
    if isinstance(request, CollectionRequest):
        if doc.get("type") != "Collection":
            raise PackageFailed(
                f"request {request.label}: create-collection did not write a Collection"
            )
        if request.collection_id:
            doc["id"] = request.collection_id
        if problem := _id_problem(doc):
            raise _unusable(request, "a collection", problem)
        if request.partition_trunc:
            doc[PARTITION_TRUNC_KEY] = request.partition_trunc
        return doc
    if doc.get("type") != "Feature":
        raise PackageFailed(f"request {request.label}: create-item did not write a STAC Item")
    # Checked whatever the override: a collection_id used to let an item without id through.
    if problem := _id_problem(doc) or _geometry_problem(doc):
        raise _unusable(request, "an item", problem)
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
