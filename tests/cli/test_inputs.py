"""``run`` and ``submit`` accept exactly what the load stage accepts (item_load.messages)."""

from __future__ import annotations

import pytest
from factories import collection, item, s3_event

from stactools_ingest.inputs import InputProblem, InputRecord, classify


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (s3_event("bucket", "stac/item.json"), ("load", 1)),
        ({"Event": "s3:TestEvent", "Bucket": "bucket"}, ("load", 1)),
        ({"href": "s3://bucket/items.ndjson"}, ("load", 1)),
        (collection("c"), ("load", 0)),
        (item("i", "c"), ("load", 1)),
        ({"type": "FeatureCollection", "features": [item("i", "c")]}, ("load", 1)),
    ],
)
def test_what_itemload_accepts_is_accepted(obj, expected):
    assert classify(InputRecord("in:1", obj)) == expected


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"type": "FeatureCollection", "features": [{"type": "Polygon"}]}, "not a STAC Item"),
        ({"href": 5}, "'href' must be a string URL"),
        (s3_event("bucket", "image.tif"), "is not a .json/.geojson/.ndjson object"),
        (["not", "an", "object"], "is a JSON list, not a STAC object"),
    ],
)
def test_what_itemload_refuses_is_refused_with_its_reason(obj, reason):
    verdict = classify(InputRecord("in:1", obj))
    assert isinstance(verdict, InputProblem)
    assert verdict.source == "in:1"
    assert reason in verdict.reason
