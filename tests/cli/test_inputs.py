"""``run`` and ``submit`` accept exactly what the load stage accepts (item_load.messages)."""

from __future__ import annotations

import pytest
from factories import collection, item, s3_event

from stactools_ingest.inputs import InputProblem, InputRecord, classify, read_inputs


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # one JSON document, however it is laid out: one record named after the file
        ('{"a": 1}\n\n', [("f", {"a": 1})]),
        ('{\n  "a": 1\n}\n', [("f", {"a": 1})]),
        ('[{"a": 1},\n {"b": 2}]', [("f#1", {"a": 1}), ("f#2", {"b": 2})]),
        # NDJSON: one record per line, named by its line
        ('{"a": 1}\n{"b": 2}\n', [("f:1", {"a": 1}), ("f:2", {"b": 2})]),
        ('\n  \n{"a": 1}\r\n\n{"b": 2}', [("f:3", {"a": 1}), ("f:5", {"b": 2})]),
        ('[1, 2]\n{"b": 2}\n', [("f:1", [1, 2]), ("f:2", {"b": 2})]),
        ('{"a": 1}\n{"b": \n', [("f:1", {"a": 1}), ("f:2", None)]),
    ],
)
def test_a_file_is_one_document_or_lines(tmp_path, text, expected):
    path = tmp_path / "f"
    path.write_text(text)
    records = list(read_inputs([str(path)]))
    got = [
        (r.source.replace(str(path), "f"), r.obj if isinstance(r, InputRecord) else None)
        for r in records
    ]
    assert got == expected
    for r in records:  # lines are kept by reference; lines and whole documents are known by
        if isinstance(r, InputRecord):  # their bytes, array members by their content
            line = ":" in r.source[len(str(path)) :]
            assert (r.span is not None) == line
            assert (r.key is not None) == (line or "#" not in r.source)


def test_a_document_alone_in_its_file_is_known_as_on_a_line_of_a_longer_one(tmp_path):
    line = '{"type": "Feature", "id": "x"}'
    alone, longer = tmp_path / "alone.json", tmp_path / "longer.ndjson"
    alone.write_text(line + "\n")
    longer.write_text(line + "\n" + '{"type": "Feature", "id": "y"}\n')
    [a] = read_inputs([str(alone)])
    b, _ = read_inputs([str(longer)])
    assert a.key is not None and a.key == b.key
