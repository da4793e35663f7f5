"""Checks that find, before any database round trip, what pgstac would refuse or store wrongly.

Each reason names the item and says what to fix; the load then fails that item's message alone
instead of a COPY group.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from item_load.errors import InvalidItem

# Python accepts UTC offsets up to 24 h, PostgreSQL only below 16 h.
MAX_UTC_OFFSET = timedelta(hours=16)


def as_aware(value: datetime) -> datetime:
    """Naive datetimes are UTC, as PostgreSQL reads them in a UTC session."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _parse_dt(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"properties.{name} must be an RFC 3339 string, got {value!r}")
    try:
        parsed = as_aware(datetime.fromisoformat(value))
    except ValueError:
        raise ValueError(f"properties.{name} {value!r} is not an RFC 3339 date-time") from None
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) >= MAX_UTC_OFFSET:
        raise ValueError(f"properties.{name} {value!r} has a UTC offset beyond ±15:59")
    return parsed


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


class Span(NamedTuple):
    """An item's time span, parsed once: for the partition name, its bounds and moved copies."""

    start: str  # what pypgstac stores as datetime: start_datetime when both ends are set
    lower: datetime
    upper: datetime


def check_item(item: dict[str, Any]) -> Span:
    """The item's time span, or InvalidItem saying why pgstac would reject or misstore it.

    Found before COPY, so a bad item costs no database round trip and fails its message alone.
    """
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidItem("item has no 'id' string")
    collection = item.get("collection")
    if not isinstance(collection, str) or not collection:
        raise InvalidItem(
            f"item {item_id} has no 'collection'; set it to the id of a collection in pgstac"
        )
    geometry = geometry_problem(item.get("geometry"))
    if geometry:
        raise InvalidItem(f"item {item_id} {geometry}")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise InvalidItem(f"item {item_id} has no 'properties' object")
    try:
        start, end = props.get("start_datetime"), props.get("end_datetime")
        if start is not None and end is not None:
            lower, upper = _parse_dt(start, "start_datetime"), _parse_dt(end, "end_datetime")
            if lower > upper:
                raise InvalidItem(f"item {item_id} has start_datetime after end_datetime")
            return Span(start, lower, upper)
        start = props.get("datetime")
        if start is not None:
            lower = _parse_dt(start, "datetime")
            return Span(start, lower, lower)
    except ValueError as e:
        raise InvalidItem(f"item {item_id}: {e}") from None
    raise InvalidItem(
        f"item {item_id} has no datetime: set properties.datetime, or both "
        "start_datetime and end_datetime"
    )
