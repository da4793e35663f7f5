"""Our batch row formatting must produce what pypgstac's Loader.format_item produces."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest
from factories import collection, item
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from item_load.rows import ewkb_hex, format_row, partition_name
from item_load.validation import check_item

GEOMETRIES = [
    {"type": "Point", "coordinates": [10.5, 45.25]},
    {"type": "Point", "coordinates": [10.5, 45.25, 120.0]},
    {"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 0.5]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
    {
        "type": "Polygon",
        "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[2, 2], [3, 2], [3, 3], [2, 3], [2, 2]],
        ],
    },
    {
        "type": "MultiPolygon",
        "coordinates": [
            [[[0, 0], [1, 0], [1, 1], [0, 0]]],
            [[[179, -10], [180, -10], [180, 10], [179, -10]]],
        ],
    },
    {"type": "MultiPoint", "coordinates": [[0, 0], [1, 1]]},
    {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]},
    {
        "type": "GeometryCollection",
        "geometries": [{"type": "Point", "coordinates": [1, 2]}],
    },
]


ITEM_ASSETS = {"B00": {"type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data"]}}  # fmt: skip


@pytest.mark.parametrize("item_assets", [None, ITEM_ASSETS], ids=["plain", "item_assets"])
def test_rows_match_pypgstac_format_item(pgstac, item_assets):
    extra = {"item_assets": item_assets} if item_assets else {}
    with PgstacDB(dsn=pgstac.dsn) as db:
        loader = Loader(db)
        loader.load_collections(iter([collection("rows", **extra)]), Methods.upsert)
        with pgstac.connect() as conn:
            conn.execute("UPDATE collections SET partition_trunc = 'month' WHERE id = 'rows'")
        Loader.collection_json.cache_clear()
        items = []
        for n, geometry in enumerate(GEOMETRIES):
            doc = item(f"g{n}", "rows", f"2021-0{1 + n % 9}-15T12:00:00Z", n_assets=3)
            doc["geometry"] = geometry
            del doc["bbox"]  # the factory's bbox is for its own square
            if n % 2:
                doc["properties"] = {
                    "start_datetime": "2020-01-01T00:00:00Z",
                    "end_datetime": "2020-12-31T00:00:00Z",
                    "datetime": None,
                }
            if n == 3:
                doc["private"] = {"owner": "me"}
            if n == 4:
                del doc["stac_version"]  # marked do-not-merge by dehydrate
            if n == 5:
                doc["assets"] = {}
            items.append(doc)
        assert None not in [ewkb_hex(d["geometry"]) for d in items]
        with psycopg.connect(pgstac.dsn) as conn:
            for doc in items:
                coll_json = loader.collection_json("rows")
                span = check_item(doc)
                ours = format_row(loader, doc, coll_json, span)
                theirs = loader.format_item(doc)
                # pypgstac hands PostgreSQL the datetime text; we hand it the UTC instant
                # PostgreSQL parses that text to (tests/item_load/test_time.py).
                for column in ("datetime", "end_datetime"):
                    assert ours[column] == datetime.fromisoformat(theirs[column])
                # pypgstac names the partition from the text; for UTC text, that is the same
                _, key, trunc = coll_json
                assert partition_name(key, trunc, span.lower) == theirs["partition"]
                left_out = {"geometry", "datetime", "end_datetime", "partition"}
                assert {k: v for k, v in ours.items() if k not in left_out} == {
                    k: v for k, v in theirs.items() if k not in left_out
                }
                # the same geometry, however the bytes are spelled
                same = conn.execute(
                    "SELECT ST_Equals(%s::geometry, %s::geometry) "
                    "AND ST_SRID(%s::geometry) = ST_SRID(%s::geometry)",
                    (ours["geometry"], theirs["geometry"]) * 2,
                ).fetchone()[0]
                assert same, doc["geometry"]


def test_ewkb_bytes_match_plpygis_for_the_common_types():
    from plpygis import Geometry

    common = [g for g in GEOMETRIES if g["type"] != "GeometryCollection"]
    assert [ewkb_hex(g) for g in common] == [str(Geometry.from_geojson(g).ewkb) for g in common]


def test_unreadable_geometry_falls_back_to_pypgstac_errors():
    # (ring closure is checked earlier, by check_item, with a clearer message)
    unreadable = [{"type": "Polygon", "coordinates": "x"}, {"x": 1}, {"type": "Point"}]
    assert [ewkb_hex(g) for g in unreadable] == [None, None, None]
