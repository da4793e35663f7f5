"""Validate what STAC and pgstac require, before any database round trip, with reasons."""

from __future__ import annotations

import copy

from factories import (
    COLL,
    collection,
    failed_ids,
    item,
    logged_reasons,
    sns_envelope,
    sqs_record,
)


def _reason(caplog, message_id: str) -> str:
    (reason,) = logged_reasons(caplog, message_id)
    return reason


def _with(item_id: str, **changes) -> dict:
    doc = item(item_id)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


SQUARE = {"type": "Polygon", "coordinates": [[[10, 40], [11, 40], [11, 41], [10, 41], [10, 40]]]}
ACROSS = {  # a scene across the antimeridian, split as RFC 7946 section 3.1.9 asks
    "type": "MultiPolygon",
    "coordinates": [
        [[[179, 60], [180, 60], [180, 61], [179, 61], [179, 60]]],
        [[[-180, 60], [-179, 60], [-179, 61], [-180, 61], [-180, 60]]],
    ],
}

BAD_ITEMS = {
    "bbox-five-numbers": (
        _with("b1", bbox=[10, 40, 11, 41, 0]),
        "item 'b1' has a 'bbox' that is not 4 or 6 numbers",
    ),
    "bbox-with-text": (
        _with("b2", bbox=[10, 40, "11", 41]),
        "item 'b2' has a 'bbox' that is not 4 or 6 numbers",
    ),
    "bbox-lat-lon-swapped": (
        _with("b3", bbox=[40, 10, 41, 11]),
        "item 'b3' has a bbox [40, 10, 41, 11] that does not contain its geometry (extent "
        "[10, 40, 11, 41])",
    ),
    "bbox-south-above-north": (
        _with("b4", bbox=[10, 41, 11, 40]),
        "item 'b4' has a bbox whose south (41) is above its north (40)",
    ),
    "bbox-antimeridian-wrong-side": (
        _with("b5", geometry=SQUARE, bbox=[170, 40, -170, 41]),
        "item 'b5' has a bbox [170, 40, -170, 41] that does not contain its geometry",
    ),
    "asset-without-href": (
        _with("a1", assets={"data": {"type": "image/tiff"}}),
        "item 'a1' asset 'data' has no 'href' string",
    ),
    "asset-href-number": (
        _with("a2", assets={"data": {"href": 7}}),
        "item 'a2' asset 'data' has no 'href' string",
    ),
    "assets-list": (
        _with("a3", assets=[{"href": "s3://b/k.tif"}]),
        "item 'a3' has 'assets' that is not an object",
    ),
    "link-without-href": (
        _with("l1", links=[{"rel": "self"}]),
        "item 'l1' link 0 (rel 'self') has no 'href' string",
    ),
    "links-object": (
        _with("l2", links={"rel": "self", "href": "x"}),
        "item 'l2' has 'links' that is not a list",
    ),
    "id-newline": (_with("bad\nid"), "item 'bad\\nid' has a control character in its id"),
    "id-nul": (_with("bad\x00id"), "item 'bad\\x00id' has a control character in its id"),
    "id-del": (_with("bad\x7fid"), "item 'bad\\x7fid' has a control character in its id"),
}


def test_items_stac_requires_are_refused_with_reasons(with_collection, load, caplog):
    records = {
        name: sqs_record(sns_envelope(doc), message_id=name) for name, (doc, _) in BAD_ITEMS.items()
    }
    good = [
        _with("plain"),
        _with("no-bbox", bbox=None),
        _with("bbox-3d", bbox=[10, 40, -5.5, 11, 41, 120.0]),
        _with("bbox-rounded", bbox=[10.00001, 39.99999, 10.99999, 41.00001]),
        _with("across", geometry=ACROSS, bbox=[179, 60, -179, 61]),
        _with("unicode-id-\u00e9\u4e16\U0001f600"),
        _with("no-links-or-assets", links=None, assets=None),
    ]
    response = load([*records.values(), *(sqs_record(sns_envelope(d)) for d in good)])
    assert failed_ids(response) == set(BAD_ITEMS)
    for name, (_, expected) in BAD_ITEMS.items():
        assert _reason(caplog, name).startswith(expected), name
    assert with_collection.item_ids(COLL) == sorted(d["id"] for d in good)


def _without(path: str) -> dict:
    doc = collection("c1")
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[key]
    del target[last]
    return doc


def _replaced(path: str, value) -> dict:
    doc = collection("c1")
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


BAD_COLLECTIONS = {
    "no-description": (_without("description"), "collection 'c1' has no 'description' string"),
    "no-license": (_without("license"), "collection 'c1' has no 'license' string"),
    "no-extent": (_without("extent"), "collection 'c1' has no 'extent' object"),
    "no-spatial": (_without("extent.spatial"), "collection 'c1' has no 'extent.spatial.bbox'"),
    "no-temporal": (
        _without("extent.temporal"),
        "collection 'c1' has no 'extent.temporal.interval'",
    ),
    "bbox-three-numbers": (
        _replaced("extent.spatial.bbox", [[1, 2, 3]]),
        "collection 'c1' has no 'extent.spatial.bbox'",
    ),
    "interval-not-a-pair": (
        _replaced("extent.temporal.interval", [["2020-01-01T00:00:00Z"]]),
        "collection 'c1' has no 'extent.temporal.interval'",
    ),
    "interval-bad-datetime": (
        _replaced("extent.temporal.interval", [["2020-W01-1", None]]),
        "collection 'c1' extent.temporal.interval '2020-W01-1' is not an RFC 3339 date-time",
    ),
    "no-links": (_without("links"), "collection 'c1' has no 'links' list"),
    "link-without-href": (
        _replaced("links", [{"rel": "license"}]),
        "collection 'c1' link 0 (rel 'license') has no 'href' string",
    ),
    "id-tab": ({**collection("c\t1")}, "collection 'c\\t1' has a control character in its id"),
}


def test_collections_stac_requires_are_refused_with_reasons(pgstac, load, caplog):
    records = [
        sqs_record(sns_envelope(doc), message_id=name) for name, (doc, _) in BAD_COLLECTIONS.items()
    ]
    fine = copy.deepcopy(collection("fine"))
    fine["extent"]["temporal"]["interval"] = [[None, None]]
    response = load([*records, sqs_record(sns_envelope(fine))])
    assert failed_ids(response) == set(BAD_COLLECTIONS)
    for name, (_, expected) in BAD_COLLECTIONS.items():
        assert _reason(caplog, name).startswith(expected), name
    with pgstac.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM collections ORDER BY id").fetchall()]
    assert ids == ["fine"]
