"""Turn STAC items into pgstac rows (what pypgstac's ``Loader.format_item`` makes), one at a time.

One at a time so that rows can be made while the COPY streams: PostgreSQL parses row n on its
core while Python makes row n+1 on the other.

Same output as ``pypgstac.load.Loader.format_item`` (a test holds the two together), except
how geometries become EWKB: plpygis builds an object tree per geometry in pure Python, which
was the largest single cost between the SQS record and the COPY. Here the usual GeoJSON types
are packed straight from their coordinate lists with ``struct``; anything else goes to GEOS
through shapely, and what neither reads goes through ``format_item`` itself, so errors read
exactly as pypgstac's.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

import orjson
from pypgstac.hydration import apply_marked_keys, dehydrate
from pypgstac.load import Loader

from item_load.validation import Span

SRID = 4326


_WKB_TYPES = {
    "Point": 1,
    "LineString": 2,
    "Polygon": 3,
    "MultiPoint": 4,
    "MultiLineString": 5,
    "MultiPolygon": 6,
}
_WKB_Z = 0x80000000
_WKB_SRID = 0x20000000
# How deep positions sit under "coordinates", per type.
_DEPTH = {"Point": 0, "LineString": 1, "MultiPoint": 1, "Polygon": 2, "MultiLineString": 2,
          "MultiPolygon": 3}  # fmt: skip
_MEMBER = {"MultiPoint": "Point", "MultiLineString": "LineString", "MultiPolygon": "Polygon"}


def _positions(coords: Any, depth: int) -> Any:
    return coords if depth == 0 else _positions(coords[0], depth - 1)


def _points(seq: list, dims: int) -> bytes:
    for position in seq:
        if len(position) != dims:
            raise ValueError("mixed coordinate dimensions")
    flat = [c for position in seq for c in position]
    return struct.pack(f"<I{len(flat)}d", len(seq), *flat)


def _body(kind: str, coords: list, dims: int) -> bytes:
    if kind == "Point":
        if len(coords) != dims:
            raise ValueError("mixed coordinate dimensions")
        return struct.pack(f"<{dims}d", *coords)
    if kind == "LineString":
        return _points(coords, dims)
    if kind == "Polygon":
        return struct.pack("<I", len(coords)) + b"".join(_points(r, dims) for r in coords)
    member = _MEMBER[kind]
    header = struct.pack("<BI", 1, _WKB_TYPES[member] | (_WKB_Z if dims == 3 else 0))
    return struct.pack("<I", len(coords)) + b"".join(
        header + _body(member, part, dims) for part in coords
    )


def _ewkb(geometry: Any) -> str | None:
    """Hex EWKB for the common GeoJSON types, straight from the coordinate lists.

    Returns None for anything unusual (empty, mixed dimensions, collections, non-numbers);
    GEOS then gets a try.
    """
    try:
        kind = geometry["type"]
        coords = geometry["coordinates"]
        dims = len(_positions(coords, _DEPTH[kind]))
        if dims not in (2, 3):
            return None
        header = struct.pack(
            "<BII", 1, _WKB_TYPES[kind] | _WKB_SRID | (_WKB_Z if dims == 3 else 0), SRID
        )
        return (header + _body(kind, coords, dims)).hex()
    except (KeyError, IndexError, TypeError, ValueError, struct.error):
        return None


def ewkb_hex(geometry: Any) -> str | None:
    """Hex EWKB with SRID 4326 for a GeoJSON geometry; None where neither path can read it."""
    out = _ewkb(geometry)
    if out is not None:
        return out
    import shapely  # only for unusual geometries: with numpy it is a tenth of a CLI's start-up

    parsed = shapely.from_geojson(orjson.dumps(geometry), on_invalid="ignore")
    if parsed is None:
        return None
    return shapely.to_wkb(shapely.set_srid(parsed, SRID), hex=True, include_srid=True)


def dehydrate_item(base_item: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """pypgstac's ``dehydrate``, short-cut for collections without ``item_assets``.

    Then the base item is only type, stac_version and collection, with ``assets: null``, and
    dehydrating reduces to dropping the top-level values equal to the base's; pypgstac's
    recursive walk over every asset finds nothing else to remove. Anything unusual goes to
    ``dehydrate`` itself.
    """
    if base_item.get("assets") is not None:
        return dehydrate(base_item, item)
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key not in base_item:
            out[key] = value
            continue
        base_value = base_item[key]
        if base_value == value:
            continue
        if base_value is not None or not isinstance(value, dict):
            return dehydrate(base_item, item)
        out[key] = dict(value)
    apply_marked_keys(base_item, item, out)
    return out


def partition_name(key: int, partition_trunc: str | None, start: datetime) -> str:
    """The partition pgstac keeps an item in, from its UTC start instant.

    What pgstac's ``partition_name`` computes in a UTC session (``to_char(dt, 'YYYYMM')``).
    pypgstac's ``format_item`` cuts it from the datetime text instead, which puts
    ``2020-06-01T05:00:00+08:00`` (May 31st in UTC) in June's partition, where PostgreSQL
    refuses the row.
    """
    if partition_trunc == "year":
        return f"_items_{key}_{start.year:04d}"
    if partition_trunc == "month":
        return f"_items_{key}_{start.year:04d}{start.month:02d}"
    return f"_items_{key}"


CollectionJson = tuple[dict[str, Any], int, str | None]


def format_row(
    loader: Loader,
    item: dict[str, Any],
    collection: CollectionJson,
    span: Span,
    geometry: str | None = None,
) -> dict[str, Any]:
    """One item as a row; ``collection`` is ``loader.collection_json`` of its collection.

    ``span`` is the item's time span as ``check_item`` parsed it: the datetime columns get the
    UTC instants, so PostgreSQL never parses the text (nor reads it in its session time zone).
    An item whose geometry neither struct nor GEOS reads goes through pypgstac's own
    ``format_item``, so its error reads exactly as pypgstac's. ``geometry``: the item's
    ``ewkb_hex``, when its reader made it already.
    """
    if geometry is None:
        geometry = ewkb_hex(item.get("geometry"))
    if geometry is None:
        geometry = loader.format_item(item)["geometry"]
    content = dehydrate_item(collection[0], item)
    for stored_in_columns in ("id", "collection", "geometry"):
        content.pop(stored_in_columns, None)
    private = content.pop("private", None)
    return {
        "id": item.get("id"),
        "collection": item.get("collection"),
        "datetime": span.lower,
        "end_datetime": span.upper,
        "geometry": geometry,
        "content": orjson.dumps(content).decode(),
        "private": orjson.dumps(private).decode() if private is not None else None,
    }
