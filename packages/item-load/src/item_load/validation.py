"""Checks that find, before any database round trip, what pgstac would refuse or store wrongly.

Each reason names the item and says what to fix; the load then fails that item's message alone
instead of a COPY group.
Datetimes are read by ``item_load.times``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, NamedTuple

from item_load.errors import InvalidCollection, InvalidItem, label
from item_load.times import parse_datetime

# Control characters (C0 and DEL): an id travels in URLs, logs and file names.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# How far (degrees) a geometry may reach beyond its bbox: producers round bboxes and densify
# them differently from footprints; swapped axes or a projected bbox are off by far more.
BBOX_TOLERANCE = 1e-3


def _rings(geometry: dict[str, Any]) -> list[Any]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return list(coords) if isinstance(coords, list) else [None]
    if kind == "MultiPolygon":
        return [r for p in coords for r in p] if isinstance(coords, list) else [None]
    return []


def geometry_problem(geometry: Any) -> str | None:
    """GeoJSON mistakes PostGIS would store silently (unclosed rings) or reject obscurely."""
    if not isinstance(geometry, dict) or "type" not in geometry:
        return "has no GeoJSON 'geometry'; pgstac requires one"
    if geometry["type"] != "GeometryCollection" and not isinstance(
        geometry.get("coordinates"), list
    ):
        return f"has a {geometry['type']} geometry without a coordinates array"
    try:
        for ring in _rings(geometry):
            if not isinstance(ring, list) or len(ring) < 4 or ring[0] != ring[-1]:
                return (
                    f"has an invalid {geometry['type']}: every ring needs at least 4 positions "
                    "and must end where it starts (RFC 7946 section 3.1.6)"
                )
    except TypeError:
        return f"has a malformed {geometry['type']} coordinates array"
    return None


def _outline(geometry: dict[str, Any]) -> list[Any]:
    """The positions that bound a GeoJSON geometry: all of them, but only polygons' outer rings
    (holes lie inside them); GeometryCollections included."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return coords[0]
    if kind == "MultiPolygon":
        return [p for polygon in coords for p in polygon[0]]
    if kind == "Point":
        return [coords]
    if kind in ("LineString", "MultiPoint"):
        return coords
    if kind == "MultiLineString":
        return [p for line in coords for p in line]
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries") or [] for p in _outline(g)]
    raise ValueError(kind)


_NUMBER_TYPES = frozenset({int, float})


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES and math.isfinite(value)


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def bbox_problem(bbox: Any, geometry: dict[str, Any]) -> str | None:
    """A bbox that is not 4 or 6 numbers, or does not contain the geometry (RFC 7946 section 5).

    West greater than east is a bbox across the antimeridian: a longitude is then inside when it
    is east of west or west of east. The geometry's own mistakes are left to its checks. One
    pass over the outline's positions; the geometry's extent is computed only for the reason.
    """
    if (
        not isinstance(bbox, list)
        or len(bbox) not in (4, 6)
        or not set(map(type, bbox)) <= _NUMBER_TYPES
        or not math.isfinite(sum(bbox))
    ):
        return "has a 'bbox' that is not 4 or 6 numbers [west, south, (low,) east, north, (high)]"
    half = len(bbox) // 2
    west, south, east, north = bbox[0], bbox[1], bbox[half], bbox[half + 1]
    if south > north:
        return f"has a bbox whose south ({south:g}) is above its north ({north:g})"
    low_x, low_y = west - BBOX_TOLERANCE, south - BBOX_TOLERANCE
    high_x, high_y = east + BBOX_TOLERANCE, north + BBOX_TOLERANCE
    across = west > east
    try:
        positions = _outline(geometry)
        for position in positions:
            x, y = position[0], position[1]
            if not low_y <= y <= high_y or (
                (x < low_x and x > high_x) if across else not low_x <= x <= high_x
            ):
                break
        else:
            return None
        xs = [p[0] for p in positions]
        ys = [p[1] for p in positions]
        extent = _fmt((min(xs), min(ys), max(xs), max(ys)))
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # the geometry's own checks and conversion say what is wrong with it
    return (
        f"has a bbox {_fmt(bbox)} that does not contain its geometry (extent {extent}); "
        "a bbox is [west, south, east, north] in longitude and latitude (RFC 7946 section 5)"
    )


def links_problem(links: Any) -> str | None:
    """Links that are not a list of objects with a non-empty string ``href``."""
    if not isinstance(links, list):
        return "has 'links' that is not a list"
    for n, link in enumerate(links):
        if not isinstance(link, dict) or not isinstance(link.get("href"), str) or not link["href"]:
            rel = link.get("rel") if isinstance(link, dict) else None
            return f"link {n} (rel {label(rel, 40)}) has no 'href' string"
    return None


def assets_problem(assets: Any) -> str | None:
    """Assets that are not an object of objects with a non-empty string ``href``."""
    if not isinstance(assets, dict):
        return "has 'assets' that is not an object"
    for key, asset in assets.items():
        if (
            not isinstance(asset, dict)
            or not isinstance(asset.get("href"), str)
            or not asset["href"]
        ):
            return f"asset {label(key, 40)} has no 'href' string"
    return None


class Span(NamedTuple):
    """An item's time span as UTC instants, parsed once: the datetime and end_datetime pgstac
    stores (start_datetime and end_datetime when both are set), its partition and bounds."""

    lower: datetime
    upper: datetime


def check_item(item: dict[str, Any]) -> Span:
    """The item's time span, or InvalidItem saying why pgstac would reject or misstore it.

    Found before COPY, so a bad item costs no database round trip and fails its message alone.
    """
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidItem("item has no 'id' string")
    if _CONTROL.search(item_id):
        raise InvalidItem(
            f"item {label(item_id)} has a control character in its id (U+0000-U+001F, U+007F); "
            "ids end up in URLs and logs"
        )
    collection = item.get("collection")
    if not isinstance(collection, str) or not collection:
        raise InvalidItem(
            f"item {label(item_id)} has no 'collection'; set it to the id of a collection in pgstac"
        )
    geometry = item.get("geometry")
    problem = geometry_problem(geometry)
    if problem is None and item.get("bbox") is not None:
        problem = bbox_problem(item["bbox"], geometry)
    if problem is None and item.get("assets") is not None:
        problem = assets_problem(item["assets"])
    if problem is None and item.get("links") is not None:
        problem = links_problem(item["links"])
    if problem:
        raise InvalidItem(f"item {label(item_id)} {problem}")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise InvalidItem(f"item {label(item_id)} has no 'properties' object")
    try:
        start, end = props.get("start_datetime"), props.get("end_datetime")
        if start is not None and end is not None:
            lower = parse_datetime(start, "properties.start_datetime")
            upper = parse_datetime(end, "properties.end_datetime")
            if lower > upper:
                raise InvalidItem(f"item {label(item_id)} has start_datetime after end_datetime")
            return Span(lower, upper)
        start = props.get("datetime")
        if start is not None:
            lower = parse_datetime(start, "properties.datetime")
            return Span(lower, lower)
    except ValueError as e:
        raise InvalidItem(f"item {label(item_id)}: {e}") from None
    raise InvalidItem(
        f"item {label(item_id)} has no datetime: set properties.datetime, or both "
        "start_datetime and end_datetime"
    )


def _bbox_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(b, list) and len(b) in (4, 6) and all(map(_is_number, b)) for b in value)
    )


def _interval_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(i, list) and len(i) == 2 for i in value)
    )


def check_collection(doc: dict[str, Any]) -> None:
    """InvalidCollection naming the collection and what STAC requires of it that is missing.

    id, description, license, extent (spatial bbox: lists of 4 or 6 numbers; temporal interval:
    [start, end] pairs of RFC 3339 date-times or null) and links with string hrefs.
    """
    kind = "catalog" if doc.get("type") == "Catalog" else "collection"
    coll_id = doc.get("id")
    if not isinstance(coll_id, str) or not coll_id:
        raise InvalidCollection(f"{kind} has no 'id' string")
    name = f"{kind} {label(coll_id)}"
    if _CONTROL.search(coll_id):
        raise InvalidCollection(f"{name} has a control character in its id (U+0000-U+001F, U+007F)")
    # A Catalog is a Collection without license and extent: STAC requires only the rest.
    for key in ("description",) if kind == "catalog" else ("description", "license"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InvalidCollection(f"{name} has no {key!r} string; STAC requires one")
    if kind == "catalog":
        _check_links(doc, name)
        return
    extent = doc.get("extent")
    if not isinstance(extent, dict):
        raise InvalidCollection(f"{name} has no 'extent' object; STAC requires one")
    spatial, temporal = extent.get("spatial"), extent.get("temporal")
    if not isinstance(spatial, dict) or not _bbox_list(spatial.get("bbox")):
        raise InvalidCollection(
            f"{name} has no 'extent.spatial.bbox' list of bboxes of 4 or 6 numbers"
        )
    if not isinstance(temporal, dict) or not _interval_list(temporal.get("interval")):
        raise InvalidCollection(
            f"{name} has no 'extent.temporal.interval' list of [start, end] pairs"
        )
    for pair in temporal["interval"]:
        for value in pair:
            if value is not None:
                try:
                    parse_datetime(value, "extent.temporal.interval")
                except ValueError as e:
                    raise InvalidCollection(f"{name} {e}") from None
    _check_links(doc, name)


def _check_links(doc: dict[str, Any], name: str) -> None:
    if "links" not in doc:
        raise InvalidCollection(f"{name} has no 'links' list; STAC requires one")
    problem = links_problem(doc["links"])
    if problem:
        raise InvalidCollection(f"{name} {problem}")
