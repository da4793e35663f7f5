"""The ItemGen core: what a package wrote is checked before it can be published."""

from __future__ import annotations

import pytest

from item_gen.core import generate
from item_gen.errors import PackageFailed
from item_gen.models import parse_request
from item_gen.settings import GenSettings


def item(**fields) -> dict:
    doc = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "tile-1",
        "collection": "from-package",
        "geometry": {"type": "Point", "coordinates": [1, 2]},
        "bbox": [1, 2, 1, 2],
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
        "links": [],
        "assets": {},
    }
    return {**doc, **fields}


def run(doc: dict, **request_fields) -> dict:
    """``generate`` with a runner that returns ``doc`` as if the package had written it."""
    request = parse_request(
        {"package_name": "stactools-x", "group_name": "x", "request_id": "req-1", **request_fields}
    )
    return generate(request, GenSettings(), lambda _request, _settings: doc)


@pytest.mark.parametrize("collection_id", [None, "override"])
@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"id": ""}, "an empty id"),
        ({"id": "   "}, "an empty id"),
        ({"id": None}, "no id"),
        ({"id": 7}, "an id that is not a string (int)"),
        ({"geometry": None}, "null geometry"),
        ({"geometry": {}}, "a geometry without type and coordinates"),
    ],
)
def test_an_item_without_id_or_geometry_is_not_published(collection_id, fields, problem):
    # GIVEN a package that writes an unusable item (with or without a collection override)
    doc = item(**fields)
    if "id" in fields and fields["id"] is None:
        del doc["id"]
    # WHEN ItemGen generates it
    # THEN the request fails permanently, naming the request and what is wrong
    with pytest.raises(PackageFailed) as failed:
        run(doc, collection_id=collection_id)
    assert str(failed.value).startswith(
        f"request req-1: `stac x create-item` wrote an item with {problem}; "
    )
    assert "pgstac cannot store it" in str(failed.value)


def test_a_collection_override_cannot_make_an_empty_collection_id_pass():
    collection = {"type": "Collection", "id": "", "description": "d", "links": []}
    with pytest.raises(
        PackageFailed, match=r"^request req-1: .* wrote a collection with an empty id"
    ):
        run(collection, create_collection_args=[], collection_id="")


def test_a_good_item_gets_the_collection_override():
    doc = run(item(), collection_id="override")
    assert (doc["id"], doc["collection"]) == ("tile-1", "override")


def test_a_collection_request_carries_its_partitioning_to_the_load_stage():
    collection = {"type": "Collection", "id": "c", "links": []}
    doc = run(dict(collection), create_collection_args=[], partition_trunc="year")
    assert doc["stactools_ingest:partition_trunc"] == "year"
    assert "stactools_ingest:partition_trunc" not in run(
        dict(collection), create_collection_args=[]
    )


def test_a_partitioning_pgstac_does_not_know_is_an_invalid_request():
    from item_gen.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="partition_trunc"):
        parse_request(
            {
                "package_name": "p",
                "group_name": "g",
                "create_collection_args": [],
                "partition_trunc": "week",
            }
        )
